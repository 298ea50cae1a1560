"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from orb_app import create_app

app = create_app()
