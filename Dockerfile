# The job image for profiles/kubernetes: shiftad and its dependencies (a CUDA build of torch),
# rsync for Snakemake's fs storage plugin. Build from the project folder:
#   docker build -t ghcr.io/your-lab/shiftad:latest . && docker push ghcr.io/your-lab/shiftad:latest
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends rsync git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/shiftad
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[kubernetes]'
