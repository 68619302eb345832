from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from .models import Base

Session = sessionmaker()


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def init_engine(app):
    engine = create_engine(app.config["DATABASE_URL"], pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    Base.metadata.create_all(engine)
    Session.configure(bind=engine)
    app.extensions["engine"] = engine
    return engine
