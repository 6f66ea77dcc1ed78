/* `wye run` (generate a continuation or a chat answer to stdout as it is produced) and
 * `wye tokenize` (print token ids as JSON; works on vocab-only GGUF files). Main thread,
 * plus the compute pool inside the forward pass. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "local-engine/constrain.h"
#include "local-engine/eng_cli.h"
#include "local-engine/engine.h"

#define RUN_PROMPT_TOKENS_MAX 65536

static void run_usage(FILE *out)
{
    fprintf(
        out,
        "usage: wye run -m MODEL -p PROMPT [options]\n\n"
        "Generates text with a local GGUF model and prints the continuation as it is produced.\n"
        "  -m FILE          the GGUF model\n"
        "  -p TEXT          the prompt (raw mode adds BOS as the model's metadata says)\n"
        "  -n N             tokens to generate (default 128)\n"
        "  --chat           apply the model's chat template with PROMPT as the user message\n"
        "  --temp T         temperature; 0 is greedy (default 0.8)\n"
        "  --top-k K        keep the K most likely tokens; 0 is off (default 40)\n"
        "  --top-p P        nucleus sampling; 1 is off (default 0.95)\n"
        "  --min-p P        drop tokens below P x the top probability (default 0.05)\n"
        "  --repeat-penalty R  penalty for tokens of the last 64 (default 1: off)\n"
        "  --seed S         random seed (default: from the clock)\n"
        "  -t N             compute threads (default 2)\n"
        "  -c N             context length (default: prompt + N)\n"
        "  --kv f32|f16     what the KV cache stores (default f32; f16 halves it)\n"
        "  --echo           print the prompt before the continuation (raw mode)\n"
        "  --ignore-eos     keep generating after end-of-sequence\n"
        "  --json-schema FILE  constrain the answer to JSON valid under this JSON Schema\n"
        "  --json           constrain the answer to a JSON object\n");
}

bool eng_cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        return false;
    }
    *out = v;
    return true;
}

/* Set by SIGINT: the generation stops after the current token (a second ^C kills). */
static atomic_bool run_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&run_interrupted, true);
}

/* Reads a JSON Schema file (at most 1 MiB) and compiles it. */
static enum wye_err load_schema(const char *path, struct eng_constraint **out, char *err,
                                size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char eb[128];
        snprintf(err, errlen, "%s: %s", path, wye_strerror(errno, eb, sizeof(eb)));
        return WYE_ERR_IO;
    }
    enum wye_err e = WYE_ERR_NOMEM;
    size_t cap = (1u << 20) + 1;
    char *text = wye_malloc(cap);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    size_t n = fread(text, 1, cap, f);
    if (ferror(f) || n == cap) {
        snprintf(err, errlen, "%s: %s", path, n == cap ? "larger than 1 MiB" : "read error");
        e = n == cap ? WYE_ERR_TOOBIG : WYE_ERR_IO;
        goto done;
    }
    char cerr[256] = "";
    e = eng_constraint_compile(text, n, out, cerr, sizeof(cerr));
    if (e) {
        snprintf(err, errlen, "%s: %s", path, cerr);
    }
done:
    wye_free(text);
    fclose(f);
    return e;
}

static enum eng_cb_ret print_text(void *arg, const char *text, size_t len)
{
    (void)arg;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return ENG_CB_CONTINUE;
}

int eng_cli_run(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *schema_path = NULL;
    bool json_object = false;
    long n_gen = 128, n_threads = 2, n_ctx = 0;
    enum eng_kv_type kv = ENG_KV_F32;
    bool chat = false, seed_set = false, echo = false;
    struct eng_gen_params gp;
    eng_gen_params_default(&gp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long lv = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            run_usage(stdout);
            return 0;
        } else if (strcmp(a, "--chat") == 0) {
            chat = true;
            continue;
        } else if (strcmp(a, "--echo") == 0) {
            echo = true;
            continue;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            gp.ignore_eos = true;
            continue;
        } else if (strcmp(a, "--json") == 0) {
            json_object = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "wye run: unknown option or missing value: %s\n", a);
            return 2;
        }
        bool ok = true;
        if (strcmp(a, "-m") == 0) {
            model_path = v;
        } else if (strcmp(a, "-p") == 0) {
            prompt = v;
        } else if (strcmp(a, "--json-schema") == 0) {
            schema_path = v;
        } else if (strcmp(a, "-n") == 0) {
            ok = eng_cli_parse_long(v, 1, 1 << 20, &n_gen);
        } else if (strcmp(a, "-t") == 0) {
            ok = eng_cli_parse_long(v, 1, 256, &n_threads);
        } else if (strcmp(a, "-c") == 0) {
            ok = eng_cli_parse_long(v, 1, 1 << 20, &n_ctx);
        } else if (strcmp(a, "--kv") == 0) {
            ok = eng_kv_type_parse(v, &kv);
        } else if (strcmp(a, "--temp") == 0) {
            ok = parse_float(v, &gp.sampling.temperature);
        } else if (strcmp(a, "--top-k") == 0) {
            ok = eng_cli_parse_long(v, 0, 1 << 22, &lv);
            gp.sampling.top_k = (int32_t)lv;
        } else if (strcmp(a, "--top-p") == 0) {
            ok = parse_float(v, &gp.sampling.top_p);
        } else if (strcmp(a, "--min-p") == 0) {
            ok = parse_float(v, &gp.sampling.min_p);
        } else if (strcmp(a, "--repeat-penalty") == 0) {
            ok = parse_float(v, &gp.sampling.repeat_penalty);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            gp.sampling.seed = strtoull(v, &end, 10);
            ok = !errno && end != v && !*end;
            seed_set = true;
        } else {
            fprintf(stderr, "wye run: unknown option '%s'\n", a);
            run_usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "wye run: bad value for %s: '%s'\n", a, v);
            return 2;
        }
        i++;
    }
    if (!model_path || !prompt) {
        run_usage(stderr);
        return 2;
    }
    if (!seed_set) {
        gp.sampling.seed = (uint64_t)wye_now_ns();
    }
    int rc = 1;
    char err[512] = "";
    struct eng_model *m = NULL;
    struct eng_ctx *c = NULL;
    struct eng_constraint *cons = NULL;
    int32_t *ids = wye_malloc(RUN_PROMPT_TOKENS_MAX * sizeof(int32_t));
    if (!ids) {
        fprintf(stderr, "wye run: out of memory\n");
        return 1;
    }
    enum wye_err e = WYE_OK;
    if (schema_path) {
        e = load_schema(schema_path, &cons, err, sizeof(err));
    } else if (json_object) {
        e = eng_constraint_json_object(&cons, err, sizeof(err));
    }
    if (e) {
        fprintf(stderr, "wye run: %s\n", err);
        goto done;
    }
    gp.constraint = cons;
    e = eng_model_load(model_path, &m, err, sizeof(err));
    if (e) {
        fprintf(stderr, "wye run: %s\n", err);
        goto done;
    }
    size_t n_prompt = 0;
    if (chat) {
        struct wye_chat_msg msg = {WYE_ROLE_USER, (char *)prompt};
        e = eng_model_tokenize_chat(m, &msg, 1, ids, RUN_PROMPT_TOKENS_MAX, &n_prompt, err,
                                    sizeof(err));
    } else {
        e = eng_model_tokenize(m, prompt, strlen(prompt), true, false, ids, RUN_PROMPT_TOKENS_MAX,
                               &n_prompt);
        snprintf(err, sizeof(err), "tokenizing the prompt: %s", wye_err_str(e));
    }
    if (e) {
        fprintf(stderr, "wye run: %s\n", err);
        goto done;
    }
    if (n_prompt == 0) {
        fprintf(stderr, "wye run: the prompt has no tokens and the model adds no BOS\n");
        goto done;
    }
    struct eng_ctx_params cp = {
        .n_ctx = n_ctx > 0 ? (int32_t)n_ctx : (int32_t)(n_prompt + (size_t)n_gen),
        .n_seq_max = 1,
        .n_batch = 64,
        .n_threads = (int32_t)n_threads,
        .kv_type = kv,
    };
    if ((e = eng_ctx_create(m, &cp, &c, err, sizeof(err)))) {
        fprintf(stderr, "wye run: %s\n", err);
        goto done;
    }
    gp.max_tokens = (int32_t)n_gen;
    if (echo && !chat) {
        fputs(prompt, stdout);
    }
    struct eng_seq_ops ops = {.on_text = print_text};
    struct eng_seq_result res;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sa.sa_flags = (int)SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    e = eng_generate(c, ids, n_prompt, &gp, &ops, NULL, &run_interrupted, &res, err, sizeof(err));
    sigaction(SIGINT, &old, NULL);
    if (e == WYE_ERR_CANCELED) {
        e = WYE_OK; /* interrupted: print what was made and the stats */
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (e) {
        fprintf(stderr, "wye run: %s\n", err[0] ? err : wye_err_str(e));
        goto done;
    }
    double tp = res.t_prompt_ns / 1e9, tg = res.t_gen_ns / 1e9;
    fprintf(stderr,
            "[%d prompt tokens in %.3f s (%.1f tok/s); %d generated in %.3f s "
            "(%.1f tok/s); finish: %s]\n",
            res.n_prompt, tp, tp > 0 ? res.n_prompt / tp : 0.0, res.n_gen, tg,
            tg > 0 && res.n_gen > 1 ? (res.n_gen - 1) / tg : 0.0, eng_finish_name(res.finish));
    rc = 0;
done:
    eng_ctx_destroy(c);
    eng_model_destroy(m);
    eng_constraint_destroy(cons);
    wye_free(ids);
    return rc;
}

static void tok_usage(FILE *out)
{
    fprintf(out, "usage: wye tokenize -m MODEL [--no-bos] [--special] TEXT\n\n"
                 "Prints the token ids of TEXT as a JSON array. MODEL may be a vocab-only "
                 "GGUF.\n"
                 "  --no-bos    do not add BOS/EOS even if the model's metadata asks for it\n"
                 "  --special   parse special-token text such as <|im_start|>\n");
}

int eng_cli_tokenize(int argc, char **argv)
{
    const char *model_path = NULL, *text = NULL;
    bool bos = true, special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            tok_usage(stdout);
            return 0;
        } else if (strcmp(a, "--no-bos") == 0) {
            bos = false;
        } else if (strcmp(a, "--special") == 0) {
            special = true;
        } else if (strcmp(a, "-m") == 0 && i + 1 < argc) {
            model_path = argv[++i];
        } else if (strcmp(a, "--") == 0 && i + 1 < argc && !text) {
            text = argv[++i];
        } else if (a[0] != '-' && !text) {
            text = a;
        } else {
            fprintf(stderr, "wye tokenize: unknown option or extra argument '%s'\n", a);
            tok_usage(stderr);
            return 2;
        }
    }
    if (!model_path || !text) {
        tok_usage(stderr);
        return 2;
    }
    char err[512];
    struct eng_model *m = NULL;
    enum wye_err e = eng_model_load_vocab(model_path, &m, err, sizeof(err));
    if (e) {
        fprintf(stderr, "wye tokenize: %s\n", err);
        return 1;
    }
    size_t len = strlen(text), n = 0;
    size_t cap = len + 8;
    int32_t *ids = wye_malloc(cap * sizeof(int32_t));
    int rc = 1;
    if (!ids) {
        fprintf(stderr, "wye tokenize: out of memory\n");
        goto done;
    }
    e = eng_model_tokenize(m, text, len, bos, special, ids, cap, &n);
    if (e) {
        fprintf(stderr, "wye tokenize: %s\n", wye_err_str(e));
        goto done;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        printf(i ? ", %d" : "%d", ids[i]);
    }
    printf("]\n");
    fflush(stdout);
    rc = 0;
done:
    wye_free(ids);
    eng_model_destroy(m);
    return rc;
}
