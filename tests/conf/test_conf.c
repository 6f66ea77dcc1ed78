/* Configuration loading: defaults, the shipped example, every kind of error with its message,
 * hostile files in the sandbox, environment/command-line precedence, secrets kept out of
 * errors and logs, and allocation failure at every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "conf/conf.h"

#define EXAMPLE WYE_SOURCE_DIR "/conf/wye.lua"

static char tmp_path[64];

static const char *const env_vars[] = {
    "WYE_LISTEN", "WYE_UPSTREAM_URL", "WYE_UPSTREAM_MODEL", "WYE_UPSTREAM_API_KEY", "WYE_MODEL",
    "WYE_LEDGER", "WYE_LOG_LEVEL",    "WYE_THREADS",        "WYE_TEST_KEY_VAR",     NULL,
};

static int setup(void **state)
{
    (void)state;
    for (int i = 0; env_vars[i]; i++) {
        unsetenv(env_vars[i]);
    }
    tmp_path[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (tmp_path[0]) {
        unlink(tmp_path);
    }
    return setup(state);
}

/* Writes len bytes of text to a fresh temporary .lua file; returns its path. */
static const char *write_file(const char *text, size_t len)
{
    if (tmp_path[0]) {
        unlink(tmp_path);
    }
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/wye-conf-test-XXXXXX.lua");
    int fd = mkstemps(tmp_path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return tmp_path;
}

static enum wye_err load_text(const char *text, struct conf_config **cfg, char *err, size_t errlen)
{
    return conf_load(write_file(text, strlen(text)), NULL, cfg, err, errlen);
}

static void assert_defaults(const struct conf_config *c)
{
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->log_level, WYE_LOG_INFO);
    assert_null(c->upstream.base_url);
    assert_null(c->upstream.model);
    assert_null(c->upstream.api_key);
    assert_null(c->upstream.api_key_env);
    assert_int_equal(c->upstream.connect_timeout_ms, 5000);
    assert_int_equal(c->upstream.first_byte_timeout_ms, 30000);
    assert_int_equal(c->upstream.idle_timeout_ms, 30000);
    assert_int_equal(c->upstream.total_timeout_ms, 300000);
    assert_int_equal(c->upstream.max_retries, 2);
    assert_int_equal(c->upstream.retry_backoff_ms, 200);
    assert_int_equal(c->upstream.max_connections, 64);
    assert_null(c->engine.model_path);
    assert_null(c->engine.model_name);
    assert_int_equal(c->engine.n_threads, 0);
    assert_int_equal(c->engine.n_ctx, 0);
    assert_int_equal(c->engine.n_seq_max, 4);
    assert_false(c->engine.kv_f16);
    assert_null(c->ledger_path);
    assert_int_equal(c->limits.body_bytes_max, 1 << 20);
    assert_int_equal(c->limits.ws_message_bytes_max, 1 << 20);
    assert_int_equal(c->limits.json_depth_max, 64);
    assert_int_equal(c->limits.n_msgs_max, 1024);
    assert_int_equal(c->limits.max_tokens_max, 32768);
    assert_int_equal(c->limits.streams_per_conn_max, 16);
    assert_int_equal(c->limits.connections_max, 1024);
    assert_int_equal(c->limits.stream_buffer_bytes, 256 << 10);
    assert_int_equal(c->limits.slow_client_timeout_ms, 10000);
    assert_int_equal(c->limits.ws_ping_interval_s, 30);
    assert_int_equal(c->limits.ws_idle_timeout_s, 300);
    assert_int_equal(c->limits.shutdown_grace_ms, 10000);
}

static void test_defaults(void **state)
{
    (void)state;
    struct conf_config *cfg;
    char err[256];
    assert_int_equal(conf_load(NULL, NULL, &cfg, err, sizeof(err)), WYE_OK);
    assert_defaults(cfg);
    assert_null(cfg->source_path);
    conf_destroy(cfg);
    conf_destroy(NULL);
}

static void test_example_file_is_the_defaults(void **state)
{
    (void)state;
    struct conf_config *cfg;
    char err[256];
    assert_int_equal(conf_load(EXAMPLE, NULL, &cfg, err, sizeof(err)), WYE_OK);
    assert_defaults(cfg);
    assert_string_equal(cfg->source_path, EXAMPLE);
    conf_destroy(cfg);
}

static const char full_conf[] =
    "local MiB = 2^20 -- a float: integral floats are accepted\n"
    "return {\n"
    "  listen = '[::1]:0', log_level = 'DEBUG',\n"
    "  upstream = { base_url = 'https://api.example.com/v1//', model = 'gpt-x',\n"
    "    api_key_env = 'WYE_TEST_KEY_VAR', connect_timeout_ms = 1, first_byte_timeout_ms = 2,\n"
    "    idle_timeout_ms = 3, total_timeout_ms = 4, max_retries = 10, retry_backoff_ms = 0,\n"
    "    max_connections = 5 },\n"
    "  engine = { model = 'models/tiny.q8.gguf', threads = 2, ctx = 2048, sequences = 8,\n"
    "             kv_type = 'f16' },\n"
    "  ledger = { path = 'ledger.jsonl' },\n"
    "  limits = { body_bytes_max = 2 * MiB, ws_message_bytes_max = 3 * MiB,\n"
    "    json_depth_max = 8, n_msgs_max = 9, max_tokens_max = 10, streams_per_conn_max = 11,\n"
    "    connections_max = 12, stream_buffer_bytes = 4096, slow_client_timeout_ms = 100,\n"
    "    ws_ping_interval_s = 13, ws_idle_timeout_s = 14, shutdown_grace_ms = 0 },\n"
    "}\n";

static void test_every_key(void **state)
{
    (void)state;
    struct conf_config *c;
    char err[256];
    setenv("WYE_TEST_KEY_VAR", "sk-test-from-named-var-1", 1);
    assert_int_equal(load_text(full_conf, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 0);
    assert_int_equal(c->log_level, WYE_LOG_DEBUG);
    assert_string_equal(c->upstream.base_url, "https://api.example.com/v1");
    assert_string_equal(c->upstream.model, "gpt-x");
    assert_string_equal(c->upstream.api_key, "sk-test-from-named-var-1");
    assert_string_equal(c->upstream.api_key_env, "WYE_TEST_KEY_VAR");
    assert_int_equal(c->upstream.connect_timeout_ms, 1);
    assert_int_equal(c->upstream.first_byte_timeout_ms, 2);
    assert_int_equal(c->upstream.idle_timeout_ms, 3);
    assert_int_equal(c->upstream.total_timeout_ms, 4);
    assert_int_equal(c->upstream.max_retries, 10);
    assert_int_equal(c->upstream.retry_backoff_ms, 0);
    assert_int_equal(c->upstream.max_connections, 5);
    assert_string_equal(c->engine.model_path, "models/tiny.q8.gguf");
    assert_string_equal(c->engine.model_name, "tiny.q8");
    assert_int_equal(c->engine.n_threads, 2);
    assert_int_equal(c->engine.n_ctx, 2048);
    assert_int_equal(c->engine.n_seq_max, 8);
    assert_true(c->engine.kv_f16);
    assert_string_equal(c->ledger_path, "ledger.jsonl");
    assert_int_equal(c->limits.body_bytes_max, 2 << 20);
    assert_int_equal(c->limits.ws_message_bytes_max, 3 << 20);
    assert_int_equal(c->limits.json_depth_max, 8);
    assert_int_equal(c->limits.n_msgs_max, 9);
    assert_int_equal(c->limits.max_tokens_max, 10);
    assert_int_equal(c->limits.streams_per_conn_max, 11);
    assert_int_equal(c->limits.connections_max, 12);
    assert_int_equal(c->limits.stream_buffer_bytes, 4096);
    assert_int_equal(c->limits.slow_client_timeout_ms, 100);
    assert_int_equal(c->limits.ws_ping_interval_s, 13);
    assert_int_equal(c->limits.ws_idle_timeout_s, 14);
    assert_int_equal(c->limits.shutdown_grace_ms, 0);
    conf_destroy(c);

    /* The globals form: assignments become the config; locals stay private. */
    assert_int_equal(load_text("local mb = 1024 * 1024\nlisten = '0.0.0.0:9000'\n"
                               "limits = { body_bytes_max = 3 * mb }\n"
                               "engine = { model = '/m/x', model_name = 'mine' }\n",
                               &c, err, sizeof(err)),
                     WYE_OK);
    assert_string_equal(c->listen_host, "0.0.0.0");
    assert_int_equal(c->listen_port, 9000);
    assert_int_equal(c->limits.body_bytes_max, 3 << 20);
    assert_string_equal(c->engine.model_name, "mine");
    assert_int_equal(c->limits.json_depth_max, 64);
    conf_destroy(c);
}

struct bad_case {
    const char *text;
    enum wye_err rc;
    const char *msg; /* must appear in the error */
};

static void check_cases(const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct conf_config *cfg = (struct conf_config *)&cfg;
        char err[512] = "";
        enum wye_err rc = load_text(cases[i].text, &cfg, err, sizeof(err));
        if (rc != cases[i].rc || !strstr(err, cases[i].msg)) {
            fail_msg("case %zu: %s\n  got rc %d: \"%s\"\n  want rc %d: \"%s\"", i, cases[i].text,
                     rc, err, cases[i].rc, cases[i].msg);
        }
        assert_null(cfg);
    }
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_validation_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"return { upstream = { conect_timeout_ms = 1 } }", WYE_ERR_INVAL,
         ": upstream.conect_timeout_ms: unknown key"},
        {"return { lisen = '1.2.3.4:5' }", WYE_ERR_INVAL, ": lisen: unknown key"},
        {"return { limits = { body_bytes_max = '1' } }", WYE_ERR_INVAL,
         "limits.body_bytes_max: expected an integer, got string"},
        {"return { limits = { body_bytes_max = 100 } }", WYE_ERR_INVAL,
         "limits.body_bytes_max: 100 is out of range 1024..1073741824"},
        {"return { upstream = { max_retries = 50 } }", WYE_ERR_INVAL,
         "upstream.max_retries: 50 is out of range 0..10"},
        {"return { upstream = { max_retries = -1 } }", WYE_ERR_INVAL,
         "upstream.max_retries: -1 is out of range 0..10"},
        {"return { engine = { threads = 1.5 } }", WYE_ERR_INVAL,
         "engine.threads: expected an integer, got 1.5"},
        {"return { engine = { sequences = 0 } }", WYE_ERR_INVAL,
         "engine.sequences: 0 is out of range 1..256"},
        {"return { engine = { kv_type = 'f8' } }", WYE_ERR_INVAL,
         "engine.kv_type: expected \"f32\" or \"f16\""},
        {"return { engine = { kv_type = 16 } }", WYE_ERR_INVAL,
         "engine.kv_type: expected a string, got number"},
        {"return { upstream = { model = 7 } }", WYE_ERR_INVAL,
         "upstream.model: expected a string, got number"},
        {"return { upstream = 5 }", WYE_ERR_INVAL, "upstream: expected a table, got number"},
        {"return { listen = 'localhost' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = '1.2.3.4:99999' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = ':80' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = 'host:' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = 'a b:80' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = '::1:80' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = '[]:80' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { listen = 'h:8o' }", WYE_ERR_INVAL, "listen: expected HOST:PORT"},
        {"return { log_level = 'loud' }", WYE_ERR_INVAL,
         "log_level: expected one of debug, info, warn, error, off"},
        {"return { upstream = { base_url = 'ftp://x' } }", WYE_ERR_INVAL,
         "upstream.base_url: expected an http:// or https:// URL"},
        {"return { upstream = { base_url = 'https://a b' } }", WYE_ERR_INVAL,
         "upstream.base_url: expected an http:// or https:// URL"},
        {"return { upstream = { base_url = 'https://x/v1' } }", WYE_ERR_INVAL,
         "upstream.model: required when upstream.base_url is set"},
        {"return { upstream = { api_key_env = 'A-B' } }", WYE_ERR_INVAL,
         "upstream.api_key_env: expected an environment variable name"},
        {"return { ledger = { path = '' } }", WYE_ERR_INVAL, "ledger.path: must not be empty"},
        {"return { ledger = { path = 'a\\0b' } }", WYE_ERR_INVAL,
         "ledger.path: contains a NUL byte"},
        {"return { engine = { model_name = 'a\\nb' } }", WYE_ERR_INVAL,
         "engine.model_name: contains control characters"},
        {"return { ledger = { path = ('x'):rep(5000) } }", WYE_ERR_INVAL,
         "ledger.path: longer than 4096 bytes"},
        {"return { 1, 2 }", WYE_ERR_INVAL, ": [1]: unknown key"},
        {"return { [true] = 1 }", WYE_ERR_INVAL, ": [boolean]: unknown key"},
        {"return { limits = { ['\\27[31mred'] = 1 } }", WYE_ERR_INVAL,
         "limits.?[31mred: unknown key"},
        {"function helper() end", WYE_ERR_INVAL, ": helper: unknown key"},
        {"return 42", WYE_ERR_PARSE, ": expected the file to return a table, got number"},
        {"return {\n  listen = '1.2.3.4:5',\n  engine = {\n}\n", WYE_ERR_PARSE,
         ":5: '}' expected (to close '{' at line 1)"},
        {"local x\n\nreturn { listen = x.y }", WYE_ERR_PARSE,
         ":3: attempt to index a nil value (local 'x')"},
        {"error('custom failure')", WYE_ERR_PARSE, ":1: custom failure"},
        {"error({})", WYE_ERR_PARSE, ": error object is a table value"},
    };
    check_cases(cases, N(cases));
}

static void test_hostile_files(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"local n = 0\nwhile true do n = n + 1 end", WYE_ERR_TOOBIG,
         ":2: instruction limit of 10000000 exceeded"},
        {"while true do pcall(function() while true do end end) end", WYE_ERR_TOOBIG,
         "instruction limit of 10000000 exceeded"},
        {"local function f() return f() end\nreturn f()", WYE_ERR_TOOBIG, "instruction limit"},
        {"local t = {}\nfor i = 1, 1e9 do t[i] = i end", WYE_ERR_TOOBIG,
         ": memory limit of 8 MiB exceeded"},
        {"local s = string.rep('x', 1e9)", WYE_ERR_TOOBIG,
         ":1: string.rep: the result exceeds the memory limit of 8 MiB"},
        {"local s = ('x'):rep(2^40, ',')", WYE_ERR_TOOBIG, "the result exceeds the memory limit"},
        {"local s = ('x'):rep(4e6) .. ('y'):rep(4e6) .. ('z'):rep(4e6)", WYE_ERR_TOOBIG,
         "memory limit of 8 MiB exceeded"},
        {"local s = 'x'\nwhile true do s = s .. s end", WYE_ERR_TOOBIG, "memory limit"},
        {"for i = 1, 1e6 do pcall(string.rep, 'x', 1e9) end\nwhile true do end", WYE_ERR_TOOBIG,
         "instruction limit"},
        {"return { listen = string.rep('', 1e18) }", WYE_ERR_INVAL, "listen: must not be empty"},
        {"os.execute('touch /tmp/wye-pwned')", WYE_ERR_PARSE, "(global 'os')"},
        {"io.open('/etc/passwd')", WYE_ERR_PARSE, "(global 'io')"},
        {"require('os')", WYE_ERR_PARSE, "(global 'require')"},
        {"dofile('/etc/passwd')", WYE_ERR_PARSE, "(global 'dofile')"},
        {"loadfile('/etc/passwd')", WYE_ERR_PARSE, "(global 'loadfile')"},
        {"load('return 1')", WYE_ERR_PARSE, "(global 'load')"},
        {"load(string.dump(function() end))", WYE_ERR_PARSE, "(field 'dump')"},
        {"local d = (''):dump(print)", WYE_ERR_PARSE, "(method 'dump')"},
        {"debug.sethook()", WYE_ERR_PARSE, "(global 'debug')"},
        {"package.loadlib('libc.so.6', 'system')", WYE_ERR_PARSE, "(global 'package')"},
        {"collectgarbage('stop')", WYE_ERR_PARSE, "(global 'collectgarbage')"},
        {"print('hello')", WYE_ERR_PARSE, "(global 'print')"},
        {"table.move({}, 1, math.maxinteger, 1)", WYE_ERR_PARSE, "(field 'move')"},
        {"local m = ('a'):rep(5000):find(('a*'):rep(200) .. 'b')", WYE_ERR_PARSE,
         "(method 'find')"},
    };
    check_cases(cases, N(cases));

    /* Unbounded recursion ends on the Lua stack limit or the memory cap, whichever first. */
    struct conf_config *cfg;
    char err[512];
    assert_int_not_equal(load_text("local function f() f() end\nf()", &cfg, err, sizeof(err)),
                         WYE_OK);
    assert_true(strstr(err, "stack overflow") || strstr(err, "memory limit"));

    /* Finalizers run with hooks off, so __gc is refused (set directly or through a
     * metatable that gains __gc later, which Lua ignores for finalization). */
    assert_int_equal(load_text("setmetatable({}, {__gc = function() while true do end end})\n",
                               &cfg, err, sizeof(err)),
                     WYE_ERR_PARSE);
    assert_non_null(strstr(err, ":1: setmetatable: __gc metamethods are not allowed here"));
    assert_int_equal(load_text("local mt = {}\nlocal t = setmetatable({}, mt)\n"
                               "mt.__gc = function() while true do end end\nt = nil\n"
                               "return { listen = '1.2.3.4:5' }",
                               &cfg, err, sizeof(err)),
                     WYE_OK);
    assert_int_equal(cfg->listen_port, 5);
    conf_destroy(cfg);
    /* A to-be-closed variable runs its handler under the hook. */
    assert_int_equal(load_text("local x <close> = setmetatable({}, {__close = function()\n"
                               "while true do end end})\nreturn {}",
                               &cfg, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, "instruction limit"));
    assert_int_equal(access("/tmp/wye-pwned", F_OK), -1);
}

static void test_file_errors(void **state)
{
    (void)state;
    struct conf_config *cfg;
    char err[512];
    assert_int_equal(conf_load("/nonexistent/wye.lua", NULL, &cfg, err, sizeof(err)), WYE_ERR_IO);
    assert_string_equal(err, "/nonexistent/wye.lua: cannot open: No such file or directory");
    assert_null(cfg);

    assert_int_equal(conf_load("/tmp", NULL, &cfg, err, sizeof(err)), WYE_ERR_IO);
    assert_string_equal(err, "/tmp: read failed: Is a directory");

    static const char bytecode[] = "\x1bLua\x54\x00\x19\x93\r\n\x1a\n";
    conf_load(write_file(bytecode, sizeof(bytecode) - 1), NULL, &cfg, err, sizeof(err));
    assert_non_null(strstr(err, "attempt to load a binary chunk (mode is 't')"));
    assert_null(cfg);

    size_t big = (1u << 20) + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, ' ', big);
    assert_int_equal(conf_load(write_file(text, big), NULL, &cfg, err, sizeof(err)),
                     WYE_ERR_TOOBIG);
    assert_non_null(strstr(err, ": larger than 1048576 bytes"));
    free(text);
    assert_int_equal(conf_load(write_file("", 0), NULL, &cfg, err, sizeof(err)), WYE_OK);
    assert_defaults(cfg);
    conf_destroy(cfg);

    /* A tiny error buffer truncates, and a NULL one is allowed. */
    char tiny[8];
    assert_int_equal(conf_load("/nonexistent", NULL, &cfg, tiny, sizeof(tiny)), WYE_ERR_IO);
    assert_string_equal(tiny, "/nonexi");
    assert_int_equal(conf_load("/nonexistent", NULL, &cfg, NULL, 0), WYE_ERR_IO);
}

static const char prec_conf[] = "return { listen = '10.0.0.1:1000', log_level = 'warn',\n"
                                "  upstream = { base_url = 'https://file/v1', model = 'file-m' },\n"
                                "  engine = { model = '/m/file.gguf', threads = 3 },\n"
                                "  ledger = { path = 'file.jsonl' } }\n";

static void test_precedence(void **state)
{
    (void)state;
    struct conf_config *c;
    char err[512];
    const char *path = write_file(prec_conf, strlen(prec_conf));
    setenv("WYE_UPSTREAM_API_KEY", "sk-test-precedence-0001", 1);
    setenv("WYE_THREADS", "", 1); /* empty counts as unset */
    assert_int_equal(conf_load(path, NULL, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->listen_host, "10.0.0.1");
    assert_int_equal(c->listen_port, 1000);
    assert_int_equal(c->log_level, WYE_LOG_WARN);
    assert_string_equal(c->upstream.base_url, "https://file/v1");
    assert_string_equal(c->upstream.model, "file-m");
    assert_string_equal(c->engine.model_path, "/m/file.gguf");
    assert_string_equal(c->engine.model_name, "file");
    assert_int_equal(c->engine.n_threads, 3);
    assert_string_equal(c->ledger_path, "file.jsonl");
    conf_destroy(c);

    setenv("WYE_LISTEN", "10.0.0.2:2000", 1);
    setenv("WYE_UPSTREAM_URL", "http://env:1/v1/", 1);
    setenv("WYE_UPSTREAM_MODEL", "env-m", 1);
    setenv("WYE_MODEL", "/m/env.gguf", 1);
    setenv("WYE_LEDGER", "env.jsonl", 1);
    setenv("WYE_LOG_LEVEL", "debug", 1);
    setenv("WYE_THREADS", "5", 1);
    assert_int_equal(conf_load(path, NULL, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->listen_host, "10.0.0.2");
    assert_int_equal(c->listen_port, 2000);
    assert_int_equal(c->log_level, WYE_LOG_DEBUG);
    assert_string_equal(c->upstream.base_url, "http://env:1/v1");
    assert_string_equal(c->upstream.model, "env-m");
    assert_string_equal(c->engine.model_path, "/m/env.gguf");
    assert_string_equal(c->engine.model_name, "env");
    assert_int_equal(c->engine.n_threads, 5);
    assert_string_equal(c->ledger_path, "env.jsonl");
    conf_destroy(c);

    struct conf_overrides ov = {.listen = "[::]:3000",
                                .upstream = "https://cli/v1",
                                .upstream_model = "cli-m",
                                .model = "cli.gguf",
                                .ledger = "cli.jsonl"};
    assert_int_equal(conf_load(path, &ov, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->listen_host, "::");
    assert_int_equal(c->listen_port, 3000);
    assert_string_equal(c->upstream.base_url, "https://cli/v1");
    assert_string_equal(c->upstream.model, "cli-m");
    assert_string_equal(c->engine.model_path, "cli.gguf");
    assert_string_equal(c->engine.model_name, "cli");
    assert_string_equal(c->ledger_path, "cli.jsonl");
    assert_int_equal(c->engine.n_threads, 5);      /* env, no override */
    assert_int_equal(c->log_level, WYE_LOG_DEBUG); /* env, no override */
    conf_destroy(c);

    /* Environment and overrides apply without a file too. */
    struct conf_overrides ov2 = {.model = "only.gguf"};
    unsetenv("WYE_MODEL");
    assert_int_equal(conf_load(NULL, &ov2, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->engine.model_path, "only.gguf");
    assert_string_equal(c->upstream.model, "env-m");
    conf_destroy(c);
}

static void test_bad_environment(void **state)
{
    (void)state;
    static const struct {
        const char *var, *value, *msg;
    } cases[] = {
        {"WYE_THREADS", "abc", "WYE_THREADS: expected an integer 0..1024"},
        {"WYE_THREADS", "4x", "WYE_THREADS: expected an integer 0..1024"},
        {"WYE_THREADS", "2000", "WYE_THREADS: 2000 is out of range 0..1024"},
        {"WYE_THREADS", "99999999999999999999", "WYE_THREADS: expected an integer"},
        {"WYE_LISTEN", "nope", "WYE_LISTEN: expected HOST:PORT"},
        {"WYE_LOG_LEVEL", "loud", "WYE_LOG_LEVEL: expected one of"},
        {"WYE_UPSTREAM_URL", "file:///etc/passwd", "WYE_UPSTREAM_URL: expected an http"},
        {"WYE_UPSTREAM_MODEL", "a\tb", "WYE_UPSTREAM_MODEL: contains control characters"},
        {"WYE_MODEL", "x\x01", "WYE_MODEL: contains control characters"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct conf_config *cfg;
        char err[512] = "";
        setenv(cases[i].var, cases[i].value, 1);
        enum wye_err rc = conf_load(EXAMPLE, NULL, &cfg, err, sizeof(err));
        unsetenv(cases[i].var);
        if (rc != WYE_ERR_INVAL || !strstr(err, cases[i].msg)) {
            fail_msg("case %zu: got rc %d \"%s\", want \"%s\"", i, rc, err, cases[i].msg);
        }
        assert_null(cfg);
    }
    struct conf_config *cfg;
    char err[512];
    struct conf_overrides ov = {.listen = "x"};
    assert_int_equal(conf_load(NULL, &ov, &cfg, err, sizeof(err)), WYE_ERR_INVAL);
    assert_non_null(strstr(err, "--listen: expected HOST:PORT"));
    struct conf_overrides ov2 = {.upstream = "https://u/v1"};
    assert_int_equal(conf_load(NULL, &ov2, &cfg, err, sizeof(err)), WYE_ERR_INVAL);
    assert_non_null(strstr(err, "upstream.model: required"));
}

static void assert_no_secret(const char *text, const char *secret)
{
    if (strstr(text, secret)) {
        fail_msg("secret %s leaked into: %s", secret, text);
    }
}

static void test_secrets(void **state)
{
    (void)state;
    static const char *const secrets[] = {
        "sk-test-env-1111111111", "sk-test-named-22222222",
        "sk-test-literal-333333", "sk-test-spaced-444",
        "sk-test-inject-555",     "sk-test-unterminated-666",
        "sk-test-constant-777",   "12345678987",
    };
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    wye_log_set_fd(p[1]);
    wye_log_set_level(WYE_LOG_INFO);

    struct conf_config *c;
    char err[512];
    /* WYE_UPSTREAM_API_KEY wins over the variable named in the file. */
    setenv("WYE_UPSTREAM_API_KEY", secrets[0], 1);
    setenv("WYE_TEST_KEY_VAR", secrets[1], 1);
    const char *named = "return { upstream = { base_url = 'https://u/v1', model = 'm',"
                        " api_key_env = 'WYE_TEST_KEY_VAR' } }";
    assert_int_equal(load_text(named, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->upstream.api_key, secrets[0]);
    conf_log_summary(c);
    WYE_INFO("the key is %s", c->upstream.api_key); /* registered: must come out redacted */
    conf_destroy(c);
    unsetenv("WYE_UPSTREAM_API_KEY");
    assert_int_equal(load_text(named, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->upstream.api_key, secrets[1]);
    WYE_INFO("the key is %s", c->upstream.api_key);
    conf_destroy(c);
    unsetenv("WYE_TEST_KEY_VAR");

    /* A literal key works but warns; the warning does not hold the key. */
    char text[512];
    snprintf(text, sizeof(text), "return { upstream = { api_key = '%s' } }", secrets[2]);
    assert_int_equal(load_text(text, &c, err, sizeof(err)), WYE_OK);
    assert_string_equal(c->upstream.api_key, secrets[2]);
    conf_destroy(c);

    /* Rejected keys never appear in the error. */
    static const char *const bad[] = {
        "return { upstream = { api_key = 'sk-test-spaced-444 x' } }",
        "return { upstream = { api_key = 12345678987 } }",
        "return { upstream = { api_key = 'sk-test-unterminated-666 } }\n",
        "return { upstream = { api_key = 'sk-test-constant-777' + 1 } }",
        "return { upstream = { api_key = 'sk-test-constant-777' .. {} } }",
        "return { upstream = { api_key = 'sk-test-constant-777' 'x' } }",
        "return { upstream = { api_key = ('sk-test-constant-777')() } }",
    };
    for (size_t i = 0; i < N(bad); i++) {
        err[0] = '\0';
        assert_int_not_equal(load_text(bad[i], &c, err, sizeof(err)), WYE_OK);
        assert_true(strlen(err) > 10);
        for (size_t j = 0; j < N(secrets); j++) {
            assert_no_secret(err, secrets[j]);
        }
    }
    assert_int_equal(load_text(bad[0], &c, err, sizeof(err)), WYE_ERR_INVAL);
    assert_non_null(strstr(err, "upstream.api_key: the key may only hold printable ASCII"));
    assert_int_equal(load_text(bad[1], &c, err, sizeof(err)), WYE_ERR_INVAL);
    assert_non_null(strstr(err, "upstream.api_key: expected a string, got number"));
    assert_int_equal(load_text(bad[2], &c, err, sizeof(err)), WYE_ERR_PARSE);
    assert_non_null(strstr(err, ":1: unfinished string near a string literal"));
    assert_int_equal(load_text(bad[6], &c, err, sizeof(err)), WYE_ERR_PARSE);
    assert_non_null(strstr(err, ":1: attempt to call a string value (a constant)"));
    setenv("WYE_UPSTREAM_API_KEY", "sk-test-inject-555\r\nX-Evil: 1", 1);
    assert_int_equal(conf_load(NULL, NULL, &c, err, sizeof(err)), WYE_ERR_INVAL);
    assert_string_equal(err, "WYE_UPSTREAM_API_KEY: the key may only hold printable ASCII "
                             "without spaces");
    unsetenv("WYE_UPSTREAM_API_KEY");

    wye_log_set_fd(2);
    close(p[1]);
    char log[16384];
    ssize_t n = read(p[0], log, sizeof(log) - 1);
    close(p[0]);
    log[n > 0 ? n : 0] = '\0';
    assert_non_null(strstr(log, "upstream.api_key is written in the file"));
    assert_non_null(strstr(log, "the key is [redacted]"));
    assert_non_null(strstr(log, "model m key set"));
    assert_non_null(strstr(log, "log_level info"));
    for (size_t j = 0; j < N(secrets); j++) {
        assert_no_secret(log, secrets[j]);
    }
}

static void test_allocation_failure(void **state)
{
    (void)state;
    const char *path = write_file(full_conf, strlen(full_conf));
    setenv("WYE_TEST_KEY_VAR", "sk-test-oom-loop-000", 1);
    setenv("WYE_LEDGER", "oom.jsonl", 1);
    struct conf_overrides ov = {.listen = "1.2.3.4:5", .model = "x.gguf"};
    long n;
    bool done = false;
    for (n = 0; n < 100000 && !done; n++) {
        struct conf_config *cfg = (struct conf_config *)&cfg;
        char err[512] = "";
        wye_alloc_fail_after(n);
        enum wye_err rc = conf_load(path, &ov, &cfg, err, sizeof(err));
        long failures = wye_alloc_failures();
        wye_alloc_fail_after(-1);
        if (rc == WYE_OK) {
            assert_string_equal(cfg->engine.model_name, "x");
            assert_string_equal(cfg->ledger_path, "oom.jsonl");
            assert_string_equal(cfg->upstream.api_key, "sk-test-oom-loop-000");
            conf_destroy(cfg);
            done = failures == 0;
        } else {
            if (rc != WYE_ERR_NOMEM) {
                fail_msg("fail after %ld: rc %d \"%s\"", n, rc, err);
            }
            assert_null(cfg);
            assert_true(failures > 0);
        }
    }
    print_message("allocation failure loop: %ld steps\n", n);
    assert_true(done);
    assert_true(n > 50); /* the loop really went through the Lua state's allocations */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_file_is_the_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
