# Orb, the file-storage node of the Lunaricorn cluster.
# Every dependency ships a wheel for this Python, so no build stage is
# needed: nothing is compiled.
FROM python:3.13.5-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/lunaricorn/orb/app

COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY wsgi.py gunicorn.conf.py ./
COPY orb_app ./orb_app
COPY migrations ./migrations

RUN groupadd --system --gid 10001 orb \
    && useradd --system --uid 10001 --gid orb --no-create-home \
        --home-dir /opt/lunaricorn/orb --shell /usr/sbin/nologin orb \
    && mkdir -p /opt/lunaricorn/orb/data /opt/lunaricorn/orb/file_storage \
        /opt/lunaricorn/orb_data/logs \
    && chown -R orb:orb /opt/lunaricorn/orb/data \
        /opt/lunaricorn/orb/file_storage /opt/lunaricorn/orb_data

ENV ORB_API_PORT=8080 \
    ORB_DATA_DIR=/opt/lunaricorn/orb/data \
    ORB_STORAGE_DIR=/opt/lunaricorn/orb/file_storage \
    ORB_LOG_DIR=/opt/lunaricorn/orb_data/logs

VOLUME ["/opt/lunaricorn/orb/data", "/opt/lunaricorn/orb/file_storage"]
EXPOSE 8080
USER 10001:10001

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ORB_API_PORT', '8080'), timeout=4)"]

STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
