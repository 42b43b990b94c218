# ansflow-realtime: RabbitMQ in, WebSocket out, on port 8001.
# Two stages so the image carries neither the TypeScript toolchain nor the dev dependencies.

# --- build: all dependencies, compile src/ to dist/ ---------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig*.json nest-cli.json* ./
COPY src ./src
RUN npm run build

# --- runtime: production dependencies and dist/ only ------------------------------------------
FROM node:20-bookworm-slim AS runtime
# Node as PID 1 neither reaps zombies nor gets default signal handling; tini forwards SIGTERM to Node so
# the graceful shutdown (close sockets 1001, drain the consumer) runs when the orchestrator stops us.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# MALLOC_MMAP_THRESHOLD_: glibc serves every allocation of 128 KiB or more with its own mmap, returned to the
# system when freed. Without it glibc raises the threshold to the largest block freed so far, and the start-up
# replay's 1 MiB digests and 128 KiB AMQP frames land in the heap between the history's long-lived slabs, where
# their memory stays after they are freed: idle RSS after replaying 200,000 events 186-199 -> 162 MB, median of 3 (issue 13).
ENV NODE_ENV=production \
    PORT=8001 \
    MALLOC_MMAP_THRESHOLD_=131072
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency needs an install script (no native modules), and skipping them keeps
# lifecycle hooks that expect dev tools from running; CI performs this exact install outside Docker.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
# The image's built-in unprivileged user; files stay root-owned so the process cannot rewrite its code.
USER node
EXPOSE 8001
# Liveness only: a broker outage makes the service unready, it must not get the container restarted.
# node:*-slim has no curl; Node 20's fetch does the probe. The fetch has its own timeout: a frozen service
# accepts the connection (the kernel does) but never answers, and not every engine enforces --timeout.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8001)+'/health/live',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/main"]
