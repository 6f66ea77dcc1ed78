/* Golden-file parser and recording callbacks for the model/engine tests. */
#include "test_model_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t parse_ints(const char *s, int32_t *out, size_t max)
{
    size_t n = 0;
    const char *p = strchr(s, '[');
    if (!p) {
        return 0;
    }
    p++;
    while (*p && *p != ']' && n < max) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        out[n++] = (int32_t)v;
        p = end;
        while (*p == ',' || *p == ' ') {
            p++;
        }
    }
    return n;
}

/* Decodes a Python string literal ('...' or "...") into out. */
static void parse_pystr(const char *s, char *out, size_t cap)
{
    char q = *s++;
    size_t n = 0;
    while (*s && *s != q && n + 1 < cap) {
        char c = *s++;
        if (c == '\\' && *s) {
            char e = *s++;
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'x': {
                char hex[3] = {s[0], s[1], 0};
                c = (char)strtol(hex, NULL, 16);
                s += 2;
                break;
            }
            default:
                c = e;
                break;
            }
        }
        out[n++] = c;
    }
    out[n] = '\0';
}

size_t gold_load(struct gold_case *cases, size_t max)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K.golden.txt", WYE_SHARED_DIR);
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    static char line[16384];
    size_t n = 0;
    struct gold_case *c = NULL;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "prompt: ", 8) == 0) {
            if (n == max) {
                break;
            }
            c = &cases[n++];
            memset(c, 0, sizeof(*c));
            parse_pystr(line + 8, c->prompt, sizeof(c->prompt));
        } else if (!c) {
            continue;
        } else if (strncmp(line, "prompt_ids: ", 12) == 0) {
            c->n_prompt = parse_ints(line, c->prompt_ids, 64);
        } else if (strncmp(line, "pos0_top5_logits: ", 18) == 0) {
            const char *p = line + 18;
            for (int i = 0; i < 5 && p; i++) {
                c->top5_id[i] = (int32_t)strtol(p, (char **)&p, 10);
                if (*p == ':') {
                    p++;
                }
                c->top5_logit[i] = strtof(p, (char **)&p);
                p = strchr(p, ',');
                if (p) {
                    p++;
                }
            }
        } else if (strncmp(line, "ids(", 4) == 0) {
            c->n_ids = parse_ints(line, c->ids, GOLD_MAX_IDS);
        } else if (strncmp(line, "text: ", 6) == 0) {
            parse_pystr(line + 6, c->text, sizeof(c->text));
        }
    }
    fclose(f);
    return n;
}

static enum eng_cb_ret rec_text(void *arg, const char *text, size_t len)
{
    struct gen_rec *r = arg;
    if (r->n_text + len < sizeof(r->text)) {
        memcpy(r->text + r->n_text, text, len);
        r->n_text += len;
        r->text[r->n_text] = '\0';
    }
    return ENG_CB_CONTINUE;
}

static enum eng_cb_ret rec_token(void *arg, int32_t id)
{
    struct gen_rec *r = arg;
    if (r->n_ids < sizeof(r->ids) / sizeof(r->ids[0])) {
        r->ids[r->n_ids++] = id;
    }
    if (r->cancel && r->cancel_after > 0 && (int32_t)r->n_ids == r->cancel_after) {
        atomic_store(r->cancel, true);
    }
    return ENG_CB_CONTINUE;
}

static void rec_done(void *arg, const struct eng_seq_result *res)
{
    struct gen_rec *r = arg;
    r->res = *res;
    r->done = true;
}

const struct eng_seq_ops gen_rec_ops = {rec_text, rec_token, rec_done};

void gen_greedy(struct eng_gen_params *p, int32_t max_tokens)
{
    memset(p, 0, sizeof(*p));
    eng_sampler_params_greedy(&p->sampling);
    p->max_tokens = max_tokens;
}
