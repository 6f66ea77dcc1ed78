/* wye: the one binary. main() dispatches to a subcommand; each subcommand lives in the module
 * it belongs to and is declared in that module's public header. main initialises what must
 * exist before any thread starts (the DRBG, libcurl, cJSON's allocator, logging). */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "local-engine/eng_cli.h"
#include "router/agent_host.h"
#include "router/keys.h"
#include "router/ledger.h"
#include "router/score.h"

struct wye_cmd {
    const char *name;
    int (*main)(int argc, char **argv); /* argv[0] is the subcommand's name */
    const char *summary;
};

/* Each module adds its subcommands here, one line each, most used first. */
static const struct wye_cmd commands[] = {
    {"serve", gw_cli_serve, "start the gateway (HTTP, SSE and WebSocket)"},
    {"run", eng_cli_run, "generate text with a local GGUF model"},
    {"bench", eng_cli_bench, "measure prompt and generation speed of a local model"},
    {"info", eng_cli_info, "print a GGUF model's architecture, shapes, types and template"},
    {"tokenize", eng_cli_tokenize, "print the token ids of a text as a JSON array"},
    {"mkmodel", eng_cli_mkmodel, "write a random-weight GGUF model with a known model's shapes"},
    {"route", rt_cli_route, "train, score and evaluate the complexity router"},
    {"ledger", rt_cli_ledger, "verify and summarise the cost/latency ledger"},
    {"keys", rt_cli_keys, "create API keys (wye keys new NAME)"},
    {"agent", rt_cli_agent, "list and run Lua agents (wye agent list | run NAME INPUT)"},
    {"lua", rt_cli_lua, "try a Lua script, tool or workflow (wye lua run FILE.lua [JSON-ARGS])"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: wye [--version] [--help] COMMAND [ARGS...]\n\n"
                 "wye routes each chat request to a small local model or a large remote LLM "
                 "API.\n\ncommands:\n");
    for (const struct wye_cmd *c = commands; c->name; c++) {
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
    }
    fprintf(out, "\nRun 'wye COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("wye %s\n", WYE_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    wye_log_init_from_env();
    wye_alloc_install_cjson_hooks();
    /* libcurl's global state must exist before any thread (the upstream's) starts. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "wye: cannot initialise libcurl\n");
        return 1;
    }
    if (wye_crypto_init() != WYE_OK) {
        fprintf(stderr, "wye: cannot seed the random number generator\n");
        return 1;
    }
    for (const struct wye_cmd *c = commands; c->name; c++) {
        if (strcmp(argv[1], c->name) == 0) {
            return c->main(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "wye: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
