# The phasestream CLI as an image: `docker run IMAGE migrate`, `... topics create`, `... run audit`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY . /src
RUN pip install /src \
 && rm -rf /src \
 && useradd --create-home --uid 10001 --user-group phasestream

# Not root; the home directory holds nothing the services need (Postgres and Kafka are external).
USER phasestream
WORKDIR /home/phasestream

ENTRYPOINT ["phasestream"]
CMD ["--help"]
