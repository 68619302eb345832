/* healthprobe: a tiny HTTP GET health check for distroless images (no shell, no curl). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int probe(const char *host, int port, const char *path, int timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 2;
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { close(fd); return 2; }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return 1; }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    if (write(fd, req, (size_t)n) != n) { close(fd); return 1; }
    char buf[64];
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got < 12) return 1;
    buf[got] = 0;
    return strncmp(buf + 9, "200", 3) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 9000;
    const char *path = argc > 3 ? argv[3] : "/healthz";
    int rc = probe(host, port, path, 3);
    if (rc != 0) fprintf(stderr, "healthprobe: %s:%d%s unhealthy (%d)\n", host, port, path, rc);
    return rc;
}
