bind = "0.0.0.0:8000"
workers = 2
threads = 4
accesslog = "-"
timeout = 30
