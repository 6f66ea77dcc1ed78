/* `wye info MODEL [--json]`: opens a GGUF file with the checking loader and prints what a user
 * wants to know before serving it: architecture, hyper-parameters, tokenizer, special tokens,
 * chat template, tensor types and sizes. Text for people, one JSON object with --json.
 * Runs on the main thread of the wye binary. */
#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/eng_cli.h"
#include "local-engine/gguf.h"

#define INFO_TEMPLATE_LINES 8 /* lines of the chat template shown in text mode */

/* Hyper-parameters read as "<arch>.<suffix>". */
static const char *const hparam_keys[] = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",
    "expert_count",
    "expert_used_count",
    "vocab_size",
};

/* Special token ids, as "tokenizer.ggml.<name>_token_id" (llama.cpp spells "seperator"). */
static const char *const special_tokens[] = {"bos",     "eos",       "eot",  "unknown",
                                             "padding", "seperator", "mask", "cls"};

struct info_types {
    int64_t count[ENG_TYPE__MAX];
    uint64_t bytes[ENG_TYPE__MAX];
    uint64_t total_bytes;
};

static void count_types(const struct eng_gguf *g, struct info_types *ty)
{
    memset(ty, 0, sizeof(*ty));
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor(g, i);
        if (t->type < ENG_TYPE__MAX) { /* always: the loader rejects unknown ids */
            ty->count[t->type]++;
            ty->bytes[t->type] += t->size;
        }
        ty->total_bytes += t->size;
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: wye info MODEL.gguf [--json]\n\n"
                 "Validates a GGUF model file and prints its architecture, hyper-parameters,\n"
                 "tokenizer, special tokens, chat template, tensor types and sizes.\n\n"
                 "  --json   print one JSON object (with the full chat template) to stdout\n"
                 "  --help   show this help\n");
}

/* Prints a scalar value of kv i as text; false if it is not a scalar. */
static bool print_scalar(FILE *out, const struct eng_gguf *g, int64_t i)
{
    int64_t v;
    double d;
    size_t n;
    struct eng_gguf_str s = eng_gguf_kv_str(g, i, 0);
    if (eng_gguf_kv_i64(g, i, &v)) {
        fprintf(out, "%" PRId64, v);
    } else if (eng_gguf_kv_f64(g, i, &d)) {
        fprintf(out, "%.7g", d);
    } else if (eng_gguf_kv_type(g, i) == ENG_GGUF_BOOL) {
        const uint8_t *p = eng_gguf_kv_raw(g, i, &n);
        fprintf(out, "%s", p[0] ? "true" : "false");
    } else if (eng_gguf_kv_type(g, i) == ENG_GGUF_STRING) {
        fprintf(out, "%.*s", (int)(s.len > 200 ? 200 : s.len), s.p);
    } else {
        return false;
    }
    return true;
}

/* Returns a cJSON value for scalar kv i, or NULL. */
static cJSON *json_scalar(const struct eng_gguf *g, int64_t i)
{
    int64_t v;
    double d;
    if (eng_gguf_kv_i64(g, i, &v)) {
        return cJSON_CreateNumber((double)v);
    }
    if (eng_gguf_kv_f64(g, i, &d)) {
        if (eng_gguf_kv_type(g, i) == ENG_GGUF_F32) {
            /* Print 1e-05, not the double nearest the float (9.99999974737875e-06). */
            char t[32];
            snprintf(t, sizeof t, "%.7g", d);
            d = strtod(t, NULL);
        }
        return cJSON_CreateNumber(d);
    }
    if (eng_gguf_kv_type(g, i) == ENG_GGUF_BOOL) {
        size_t n;
        const uint8_t *p = eng_gguf_kv_raw(g, i, &n);
        return cJSON_CreateBool(p[0] != 0);
    }
    if (eng_gguf_kv_type(g, i) == ENG_GGUF_STRING) {
        struct eng_gguf_str s = eng_gguf_kv_str(g, i, 0);
        char *c = wye_strndup(s.p, s.len);
        if (!c) {
            return NULL;
        }
        cJSON *j = cJSON_CreateString(c);
        wye_free(c);
        return j;
    }
    return NULL;
}

static bool add_str(cJSON *obj, const char *name, struct eng_gguf_str s)
{
    char *c = wye_strndup(s.p ? s.p : "", s.len);
    if (!c) {
        return false;
    }
    bool ok = cJSON_AddStringToObject(obj, name, c) != NULL;
    wye_free(c);
    return ok;
}

static int print_json(const char *path, const struct eng_gguf *g, const char *arch)
{
    char key[160];
    int rc = 1;
    struct info_types ty;
    count_types(g, &ty);
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        goto oom;
    }
    bool ok = cJSON_AddStringToObject(root, "file", path) &&
              cJSON_AddNumberToObject(root, "gguf_version", eng_gguf_version(g)) &&
              cJSON_AddNumberToObject(root, "alignment", (double)eng_gguf_alignment(g)) &&
              cJSON_AddNumberToObject(root, "n_kv", (double)eng_gguf_n_kv(g)) &&
              cJSON_AddNumberToObject(root, "n_tensors", (double)eng_gguf_n_tensors(g)) &&
              cJSON_AddNumberToObject(root, "file_bytes", (double)eng_gguf_file_size(g));
    struct eng_gguf_str s;
    if (ok && arch) {
        ok = cJSON_AddStringToObject(root, "architecture", arch) != NULL;
    }
    if (ok && eng_gguf_get_str(g, "general.name", &s)) {
        ok = add_str(root, "name", s);
    }
    cJSON *hp = ok ? cJSON_AddObjectToObject(root, "hparams") : NULL;
    ok = hp != NULL;
    for (size_t k = 0; ok && arch && k < sizeof(hparam_keys) / sizeof(hparam_keys[0]); k++) {
        snprintf(key, sizeof key, "%s.%s", arch, hparam_keys[k]);
        int64_t i = eng_gguf_find(g, key);
        cJSON *v = i >= 0 ? json_scalar(g, i) : NULL;
        if (v) {
            cJSON_AddItemToObject(hp, hparam_keys[k], v);
        }
    }
    cJSON *tok = ok ? cJSON_AddObjectToObject(root, "tokenizer") : NULL;
    ok = tok != NULL;
    if (ok && eng_gguf_get_str(g, "tokenizer.ggml.model", &s)) {
        ok = add_str(tok, "model", s);
    }
    if (ok && eng_gguf_get_str(g, "tokenizer.ggml.pre", &s)) {
        ok = add_str(tok, "pre", s);
    }
    uint64_t n_vocab = 0;
    if (ok && eng_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n_vocab)) {
        ok = cJSON_AddNumberToObject(tok, "n_tokens", (double)n_vocab) != NULL;
    }
    if (ok) {
        ok = cJSON_AddBoolToObject(tok, "scores", eng_gguf_find(g, "tokenizer.ggml.scores") >= 0) !=
             NULL;
    }
    uint64_t n_merges = 0;
    if (ok && eng_gguf_get_arr(g, "tokenizer.ggml.merges", NULL, &n_merges)) {
        ok = cJSON_AddNumberToObject(tok, "n_merges", (double)n_merges) != NULL;
    }
    cJSON *sp = ok ? cJSON_AddObjectToObject(tok, "special") : NULL;
    ok = sp != NULL;
    for (size_t k = 0; ok && k < sizeof(special_tokens) / sizeof(special_tokens[0]); k++) {
        uint32_t id;
        snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", special_tokens[k]);
        if (eng_gguf_get_u32(g, key, &id)) {
            ok = cJSON_AddNumberToObject(sp, special_tokens[k], id) != NULL;
        }
    }
    bool flag;
    if (ok && eng_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag)) {
        ok = cJSON_AddBoolToObject(tok, "add_bos", flag) != NULL;
    }
    if (ok && eng_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &flag)) {
        ok = cJSON_AddBoolToObject(tok, "add_eos", flag) != NULL;
    }
    if (ok && eng_gguf_get_str(g, "tokenizer.chat_template", &s)) {
        ok = add_str(root, "chat_template", s);
    }
    cJSON *types = ok ? cJSON_AddObjectToObject(root, "tensor_types") : NULL;
    ok = types != NULL;
    for (uint32_t t = 0; ok && t < ENG_TYPE__MAX; t++) {
        if (ty.count[t] == 0) {
            continue;
        }
        cJSON *o = cJSON_AddObjectToObject(types, eng_type_name(t));
        ok = o && cJSON_AddNumberToObject(o, "count", (double)ty.count[t]) &&
             cJSON_AddNumberToObject(o, "bytes", (double)ty.bytes[t]);
    }
    if (ok) {
        ok = cJSON_AddNumberToObject(root, "tensor_bytes", (double)ty.total_bytes) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    if (!text) {
        goto oom;
    }
    printf("%s\n", text);
    cJSON_free(text);
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "wye info: out of memory\n");
out:
    cJSON_Delete(root);
    return rc;
}

static void print_template(const struct eng_gguf_str *s)
{
    size_t pos = 0;
    int lines = 0;
    printf("chat template:  %zu bytes\n", s->len);
    while (pos < s->len && lines < INFO_TEMPLATE_LINES) {
        const char *nl = memchr(s->p + pos, '\n', s->len - pos);
        size_t end = nl ? (size_t)(nl - s->p) : s->len;
        size_t n = end - pos > 160 ? 160 : end - pos;
        printf("  | %.*s%s\n", (int)n, s->p + pos, end - pos > n ? "..." : "");
        pos = end + 1;
        lines++;
    }
    if (pos < s->len) {
        printf("  | ... (use --json for the full template)\n");
    }
}

static void print_text(const char *path, const struct eng_gguf *g, const char *arch)
{
    char key[160];
    struct eng_gguf_str s;
    printf("file:           %s (%zu bytes)\n", path, eng_gguf_file_size(g));
    printf("gguf version:   %" PRIu32 " (alignment %zu, %" PRId64 " key/values, %" PRId64
           " tensors)\n",
           eng_gguf_version(g), eng_gguf_alignment(g), eng_gguf_n_kv(g), eng_gguf_n_tensors(g));
    printf("architecture:   %s\n", arch ? arch : "(none: general.architecture is missing)");
    if (eng_gguf_get_str(g, "general.name", &s)) {
        printf("name:           %.*s\n", (int)(s.len > 200 ? 200 : s.len), s.p);
    }
    if (arch) {
        printf("hyper-parameters:\n");
        for (size_t k = 0; k < sizeof(hparam_keys) / sizeof(hparam_keys[0]); k++) {
            snprintf(key, sizeof key, "%s.%s", arch, hparam_keys[k]);
            int64_t i = eng_gguf_find(g, key);
            if (i < 0) {
                continue;
            }
            printf("  %-38s ", hparam_keys[k]);
            if (!print_scalar(stdout, g, i)) {
                printf("(%s)", eng_gguf_vtype_name(eng_gguf_kv_type(g, i)));
            }
            printf("\n");
        }
    }
    uint64_t n_vocab = 0, n_merges = 0;
    bool has_vocab = eng_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n_vocab);
    printf("tokenizer:      ");
    if (eng_gguf_get_str(g, "tokenizer.ggml.model", &s)) {
        printf("%.*s", (int)(s.len > 64 ? 64 : s.len), s.p);
    } else {
        printf("(no tokenizer.ggml.model)");
    }
    if (eng_gguf_get_str(g, "tokenizer.ggml.pre", &s)) {
        printf(", pre %.*s", (int)(s.len > 64 ? 64 : s.len), s.p);
    }
    if (has_vocab) {
        printf(", %" PRIu64 " tokens", n_vocab);
    }
    if (eng_gguf_find(g, "tokenizer.ggml.scores") >= 0) {
        printf(" with scores");
    }
    if (eng_gguf_get_arr(g, "tokenizer.ggml.merges", NULL, &n_merges)) {
        printf(", %" PRIu64 " merges", n_merges);
    }
    printf("\n");
    bool any = false;
    for (size_t k = 0; k < sizeof(special_tokens) / sizeof(special_tokens[0]); k++) {
        uint32_t id;
        snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", special_tokens[k]);
        if (!eng_gguf_get_u32(g, key, &id)) {
            continue;
        }
        printf("%s%s %" PRIu32, any ? ", " : "special tokens: ", special_tokens[k], id);
        struct eng_gguf_str t = eng_gguf_arr_str(g, "tokenizer.ggml.tokens", id);
        if (t.p) {
            printf(" '%.*s'", (int)(t.len > 32 ? 32 : t.len), t.p);
        }
        any = true;
    }
    if (any) {
        printf("\n");
    }
    bool add_bos, add_eos;
    bool has_bos = eng_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
    bool has_eos = eng_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);
    if (has_bos || has_eos) {
        printf("adds tokens:    bos %s, eos %s\n", has_bos ? (add_bos ? "yes" : "no") : "unset",
               has_eos ? (add_eos ? "yes" : "no") : "unset");
    }
    if (eng_gguf_get_str(g, "tokenizer.chat_template", &s)) {
        print_template(&s);
    } else {
        printf("chat template:  (none)\n");
    }
    struct info_types ty;
    count_types(g, &ty);
    printf("tensors:        %" PRId64 ", %" PRIu64 " bytes", eng_gguf_n_tensors(g), ty.total_bytes);
    const char *sep = " (";
    for (uint32_t t = 0; t < ENG_TYPE__MAX; t++) {
        if (ty.count[t]) {
            printf("%s%s x%" PRId64 " %" PRIu64 " bytes", sep, eng_type_name(t), ty.count[t],
                   ty.bytes[t]);
            sep = ", ";
        }
    }
    printf("%s\n", sep[0] == ',' ? ")" : "");
}

int eng_cli_info(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "wye info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "wye info: more than one model given ('%s' and '%s')\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    char err[512];
    struct eng_gguf *g = NULL;
    if (eng_gguf_open(path, &g, err, sizeof err) != WYE_OK) {
        fprintf(stderr, "wye info: %s\n", err);
        return 1;
    }
    char arch[64] = "";
    struct eng_gguf_str s;
    bool has_arch = eng_gguf_get_str(g, "general.architecture", &s) && s.len < sizeof arch &&
                    memchr(s.p, '\0', s.len) == NULL;
    if (has_arch) {
        memcpy(arch, s.p, s.len);
        arch[s.len] = '\0';
    }
    int rc = 0;
    if (json) {
        rc = print_json(path, g, has_arch ? arch : NULL);
    } else {
        print_text(path, g, has_arch ? arch : NULL);
    }
    eng_gguf_close(g);
    return rc;
}
