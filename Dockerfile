# offpost: one image for every role (api, dispatcher, worker, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 offpost

# Never run the worker (or anything else) as root.
USER offpost
WORKDIR /home/offpost
EXPOSE 8000
ENTRYPOINT ["offpost"]
CMD ["--help"]
