# offpost: one image for every role (api, dispatcher, worker, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Exactly the locked versions (checked by hash), the build backend included,
# so building offpost itself fetches nothing outside the lock.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation . && useradd --create-home --uid 10001 offpost

# Never run the worker (or anything else) as root.
USER offpost
WORKDIR /home/offpost
EXPOSE 8000
ENTRYPOINT ["offpost"]
CMD ["--help"]
