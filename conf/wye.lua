-- wye configuration: every key with its default value (this file loads to the defaults).
--
-- The file is Lua 5.4 run in a sandbox: base functions (without dofile, loadfile, load,
-- print, collectgarbage), string (without dump, find, match, gmatch, gsub), table (without
-- move) and math. No io, os, require or debug. It gets 8 MiB of memory and 10 million VM
-- instructions. Return one table (as here); keys not listed below are errors.
-- Sizes are integers in bytes, so arithmetic such as 1024 * 1024 or 2^20 is fine.
--
-- Precedence: defaults < this file < environment (WYE_*) < command-line options.
-- Reference: docs/config.md.

return {
    -- Address the gateway listens on: "HOST:PORT" or "[IPV6]:PORT"; port 0 picks a free
    -- port. Environment: WYE_LISTEN.
    listen = "127.0.0.1:8080",

    -- Least severe log level printed: "debug", "info", "warn", "error" or "off".
    -- Environment: WYE_LOG_LEVEL.
    log_level = "info",

    -- The remote OpenAI-compatible API. Without base_url there is no upstream.
    upstream = {
        -- Base URL, http:// or https://; "/chat/completions" is appended to it. A trailing
        -- "/" is removed. Environment: WYE_UPSTREAM_URL. Default: none.
        -- base_url = "https://api.openai.com/v1",

        -- Model name sent upstream; required when base_url is set.
        -- Environment: WYE_UPSTREAM_MODEL. Default: none.
        -- model = "gpt-4o-mini",

        -- Name of the environment variable holding the API key. WYE_UPSTREAM_API_KEY, when
        -- set, wins over it. Default: none.
        -- api_key_env = "OPENAI_API_KEY",

        -- The key itself. Allowed, but logs a warning: keep keys out of files.
        -- api_key = "sk-...",

        -- TCP + TLS connect, 1..600000 ms.
        connect_timeout_ms = 5000,
        -- Request sent -> first response byte, 1..3600000 ms. Streamed requests only: a
        -- non-streamed one is sent upstream non-streamed and total_timeout_ms bounds it.
        first_byte_timeout_ms = 30000,
        -- Longest silence between two streamed chunks, 1..3600000 ms.
        idle_timeout_ms = 30000,
        -- Whole request, 1..86400000 ms.
        total_timeout_ms = 300000,
        -- Retries (only before the first byte reached the client), 0..10.
        max_retries = 2,
        -- Backoff before the first retry, doubled for each next one, 0..60000 ms.
        retry_backoff_ms = 200,
        -- Concurrent connections to the upstream, 1..10000.
        max_connections = 64,
    },

    -- The local model.
    engine = {
        -- GGUF file served locally. Environment: WYE_MODEL. Default: none (no local model).
        -- model = "models/model.gguf",

        -- Name in /v1/models. Default: the file name without ".gguf".
        -- model_name = "local-small",

        -- Compute threads, 0..1024; 0 uses every core. Environment: WYE_THREADS.
        threads = 0,
        -- Context length in tokens, 0..1048576; 0 uses the model's own.
        ctx = 0,
        -- Sequences decoded together (concurrent local requests), 1..256.
        sequences = 4,
        -- What the KV cache stores: "f32" (exact) or "f16" (half the memory per sequence and
        -- less memory traffic in attention; every key and value rounded to 11 bits).
        kv_type = "f32",
    },

    ledger = {
        -- Append-only JSON Lines ledger of finished requests (`wye serve` always keeps one).
        -- Environment: WYE_LEDGER; command line: --ledger. Default: wye-ledger.jsonl in the
        -- working directory.
        -- path = "wye-ledger.jsonl",

        -- When records reach the disk: "none" (the kernel decides), "always" (fdatasync before
        -- a record is acknowledged, one per write batch) or "interval" (at most every
        -- fsync_interval_ms while there is unsynced data, never holding an answer back).
        fsync = "interval",
        -- For fsync = "interval", 1..3600000 ms.
        fsync_interval_ms = 1000,
        -- Start a new file "<path>.<seq>" before one would grow past this many bytes;
        -- 0 = never, up to 2^50.
        rotate_bytes = 0,
        -- Start a new file when the UTC day changes.
        rotate_daily = false,
    },

    -- Client API keys. Create one with `wye keys new NAME`: it prints the key once and the
    -- entry to paste here (only the key's SHA-256 is stored). Names and hashes are unique.
    -- Default: no keys (and then no authentication).
    keys = {
        -- {
        --     name = "alice",           -- A-Z a-z 0-9 _ . - @, at most 64; goes into the ledger
        --     sha256 = "<64 hex digits>", -- SHA-256 of the key (from `wye keys new`)
        --     rpm = 60,                 -- requests per minute, 0..1000000; 0 (default) = unlimited
        --     budget_usd_day = 1.0,     -- remote spend per UTC day; absent = unlimited, 0 = none
        --     budget_usd_month = 20,    -- remote spend per UTC month; absent = unlimited, 0 = none
        --     routes = { "local", "remote" }, -- routes this key may use (default: both)
        --     over_budget = "local",    -- past a budget: "local" (answer locally) or "refuse";
        --                               -- default "local", or "refuse" without the local route
        -- },
    },

    auth = {
        -- Refuse requests without a valid key (401). Default: true when keys are configured,
        -- false otherwise; when false, requests without a key run as key "anonymous" (a key
        -- that is presented must still be valid).
        -- required = true,
    },

    -- Prices in USD per million tokens, for the ledger's cost, savings and the key budgets.
    prices = {
        -- Remote models by name. Default: none.
        models = {
            -- ["gpt-4o-mini"] = { input_per_1m = 0.15, output_per_1m = 0.60 },
        },
        -- Remote models missing from the table, and what a local answer would have cost
        -- remotely (the counterfactual). 0..1e6 each.
        default_remote = { input_per_1m = 0.15, output_per_1m = 0.60 },
        -- What local tokens cost (input and output), 0..1e6.
        local_per_1m = 0,
    },

    -- Routing policy (docs/routing.md).
    router = {
        -- Requests scoring at least this go remote, 0..1. Default: not set, which uses the
        -- threshold trained into the weights (0.4689 for the built-in ones); `wye route eval`
        -- and `wye route score` take -c CONF to decide the same way.
        -- threshold = 0.5,
        -- Weights JSON of the complexity score. Default: none (the built-in weights).
        -- weights = "conf/router-weights.json",
        -- A Lua hook: source text defining function route(request, features, score), or a
        -- file holding it (not both). Default: none.
        -- hook = [[ function route(request, features, score) return nil end ]],
        -- hook_file = "conf/route.lua",
        -- Time and memory the hook may use per call: 1..10000 ms and 64..1048576 KiB.
        hook_timeout_ms = 5,
        hook_memory_kb = 1024,
        -- Local requests waiting for a free engine sequence, 0..1000000; 0 means no queue (a
        -- request that finds every sequence busy is refused). Past it, a request goes remote
        -- when it can, else it is refused with 429.
        queue_max = 64,
        -- Consecutive backend failures that open the circuit breaker (1..1000), and how long
        -- it stays open (100..3600000 ms).
        breaker_failures = 5,
        breaker_cooldown_ms = 10000,
        -- While the remote's average time to first token (an EWMA) is above this, "auto"
        -- requests scored just above the threshold go local (reason "upstream_slow"); the
        -- margin grows with how slow the remote is, up to 0.2. Clearly hard requests still go
        -- remote. 0..600000 ms; 0 turns it off.
        latency_target_ms = 10000,
    },

    -- Limits on what clients may send and hold. Each one answers with an error naming it.
    limits = {
        -- HTTP request body, 1024..2^30 bytes.
        body_bytes_max = 1024 * 1024,
        -- One WebSocket message, 1024..2^30 bytes.
        ws_message_bytes_max = 1024 * 1024,
        -- JSON nesting depth, 2..1000.
        json_depth_max = 64,
        -- Messages in one chat request, 1..1000000.
        n_msgs_max = 1024,
        -- Largest max_tokens a request may ask for, 1..10000000.
        max_tokens_max = 32768,
        -- Requests in flight on one WebSocket, 1..1024.
        streams_per_conn_max = 16,
        -- Open client connections, 1..1000000.
        connections_max = 1024,
        -- Bytes queued for one stream before its producer is paused, 4096..2^30.
        stream_buffer_bytes = 256 * 1024,
        -- A client whose queue stays full this long is disconnected, 100..3600000 ms.
        slow_client_timeout_ms = 10000,
        -- WebSocket ping period, 1..3600 s.
        ws_ping_interval_s = 30,
        -- A WebSocket idle this long is closed, 1..86400 s.
        ws_idle_timeout_s = 300,
        -- On SIGTERM, time left for streams in flight to finish, 0..600000 ms.
        shutdown_grace_ms = 10000,
    },

    -- Lua agents and workflows (wye serve --agents DIR, wye agent run, wye lua run).
    agents = {
        -- Agent worker threads, each with its own Lua state, 1..64 (default 2, or the
        -- WYE_AGENT_WORKERS variable).
        workers = 2,
        -- Hosts each agent or workflow may reach with wye.http.request, added to the
        -- allow_hosts its script declares: "api.example.com", "*.example.com" (subdomains)
        -- or "*" (anything). A host on neither list is refused with an error naming it.
        allow_hosts = {
            summarise = { "example.com" },
        },
    },
}
