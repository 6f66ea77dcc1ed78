/* Contexts, sequences and the generation loop (continuous batching).
 *
 * DESIGN: a context has n_seq_max slots; each slot owns a KV cache region, a sampler, a
 * streaming detokenizer and a stop-string window, all allocated when the context is created.
 * eng_batch_step builds one forward batch from every runnable slot (one token per generating
 * slot, then prompt chunks up to n_batch tokens), runs it, samples a token for every slot
 * whose logits came out, and turns tokens into text deltas: text that could still be the
 * start of a stop string is held back until it cannot, so a stop string split across tokens
 * is never emitted. Slots are added and removed between steps by the thread that steps the
 * context (the engine worker); only the cancel flags are read across threads.
 * A constraint (constrain.h) masks every token, or, with a trigger (lazy), only the tokens
 * between the trigger and the end of the JSON value it opens: the trigger is held back like a
 * stop string, and the sampled token that completes it is checked (its bytes after the
 * trigger must start a value that can still close within max_tokens) before it is taken. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "local-engine/constrain.h"
#include "local-engine/model_internal.h"

enum slot_state { SLOT_FREE = 0, SLOT_PREFILL, SLOT_GEN };

struct slot {
    enum slot_state state;
    bool paused;
    int32_t *prompt; /* (n_ctx) */
    int32_t n_prompt;
    int32_t n_past; /* positions in the KV cache */
    int32_t n_gen;
    int32_t max_tokens;
    int32_t last; /* sampled token not yet in the cache */
    bool ignore_eos;
    struct eng_sampler *smp;
    struct eng_detok detok;
    char *piece; /* (piece_cap) one detokenizer delta */
    char *pend;  /* (pend_cap) text held back for stop strings */
    size_t n_pend;
    char stop[ENG_STOP_MAX][ENG_STOP_LEN_MAX + 1];
    size_t stop_len[ENG_STOP_MAX];
    int n_stop;
    const struct eng_seq_ops *ops;
    void *arg;
    const atomic_bool *cancel;
    int64_t t_start, t_first;
    uint32_t epoch;   /* bumped by every add: tells a reused slot from its old self */
    int32_t *kv_tok;  /* (n_ctx) the token whose K/V sits at each position */
    int32_t kv_n;     /* positions [0, kv_n) of kv_tok are valid (outlives the sequence) */
    int32_t n_cached; /* prompt tokens found in the cache at add */
    const struct eng_constraint *cons; /* borrowed; NULL: unconstrained */
    struct eng_cstate *cst;            /* matcher state of cons */
    /* lazy constraints (a trigger): cons applies only while cons_on */
    bool lazy, cons_on;
    bool trig_in_value;
    bool announce; /* constrain_first: on_constraint(true) before the first text */
    bool sim_on;   /* the sampled token completes the trigger; cst is the state after it */
    bool closing;  /* the sampled token completes the value */
    char trig[ENG_STOP_LEN_MAX + 1];
    size_t trig_len;
    char *tsim; /* (pend_cap) held-back text + a candidate token's piece */
    enum eng_cb_ret (*on_constraint)(void *arg, bool active);
};

struct eng_ctx {
    struct eng_model *m;
    struct eng_pool *pool;
    bool own_pool;
    struct eng_fwd f;
    int32_t n_ctx, n_seq, n_batch;
    struct slot *slots;     /* (n_seq) */
    struct eng_btok *btoks; /* (n_batch) */
    int32_t *out_slot;      /* (n_seq) slot of each logits row */
    uint32_t *out_epoch;    /* (n_seq) that slot's epoch when the batch was built */
    size_t piece_cap, pend_cap;
    int32_t n_active;
    struct eng_cmask *cmask; /* vocabulary trie, built by the first constrained add */
};

const char *eng_finish_name(enum eng_finish f)
{
    switch (f) {
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_LENGTH:
        return "length";
    case ENG_FINISH_CANCELLED:
        return "cancelled";
    case ENG_FINISH_ERROR:
        return "error";
    case ENG_FINISH_NONE:
        break;
    }
    return "none";
}

void eng_gen_params_default(struct eng_gen_params *p)
{
    memset(p, 0, sizeof(*p));
    p->sampling.temperature = 0.8f;
    p->sampling.top_k = 40;
    p->sampling.top_p = 0.95f;
    p->sampling.min_p = 0.05f;
    p->sampling.repeat_penalty = 1.0f;
    p->sampling.repeat_last_n = 64;
    p->max_tokens = 256;
}

const char *eng_model_chat_family(const struct eng_model *m)
{
    return eng_chat_family_name(m->chat);
}

int32_t eng_ctx_n_ctx(const struct eng_ctx *c)
{
    return c->n_ctx;
}

const struct eng_model *eng_ctx_model(const struct eng_ctx *c)
{
    return c->m;
}

bool eng_ctx_kv_f16(const struct eng_ctx *c)
{
    return c->f.kv_f16;
}

const char *eng_kv_type_name(enum eng_kv_type t)
{
    return t == ENG_KV_F16 ? "f16" : "f32";
}

bool eng_kv_type_parse(const char *s, enum eng_kv_type *out)
{
    if (strcmp(s, "f32") == 0) {
        *out = ENG_KV_F32;
    } else if (strcmp(s, "f16") == 0) {
        *out = ENG_KV_F16;
    } else {
        return false;
    }
    return true;
}

enum wye_err eng_ctx_create(struct eng_model *m, const struct eng_ctx_params *p,
                            struct eng_ctx **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (m->vocab_only) {
        snprintf(errbuf, errlen, "the model was loaded without weights (vocabulary only)");
        return WYE_ERR_INVAL;
    }
    struct eng_ctx_params d = *p;
    if (d.n_ctx <= 0) {
        d.n_ctx = m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096;
    }
    d.n_seq_max = d.n_seq_max > 0 ? d.n_seq_max : 1;
    d.n_batch = d.n_batch > 0 ? d.n_batch : 64;
    d.n_threads = d.n_threads > 0 ? d.n_threads : 1;
    if (d.kv_type != ENG_KV_F32 && d.kv_type != ENG_KV_F16) {
        snprintf(errbuf, errlen, "unknown KV cache type %d", (int)d.kv_type);
        return WYE_ERR_INVAL;
    }
    if (d.n_ctx > (1 << 20) || d.n_seq_max > 256 || d.n_batch > 8192) {
        snprintf(errbuf, errlen,
                 "context parameters out of range (n_ctx %d <= 1048576, "
                 "n_seq_max %d <= 256, n_batch %d <= 8192)",
                 d.n_ctx, d.n_seq_max, d.n_batch);
        return WYE_ERR_TOOBIG;
    }
    if (d.n_batch < d.n_seq_max) {
        d.n_batch = d.n_seq_max; /* every generating sequence fits in one step */
    }
    enum wye_err e = WYE_ERR_NOMEM;
    struct eng_ctx *c = wye_calloc(1, sizeof(*c));
    if (!c) {
        goto fail;
    }
    c->m = m;
    c->n_ctx = d.n_ctx;
    c->n_seq = d.n_seq_max;
    c->n_batch = d.n_batch;
    if (d.pool) {
        c->pool = d.pool;
    } else {
        c->pool = eng_pool_create(d.n_threads);
        if (!c->pool) {
            snprintf(errbuf, errlen, "cannot start %d compute threads", d.n_threads);
            goto fail_ctx;
        }
        c->own_pool = true;
    }
    e = eng_fwd_init(&c->f, m, c->pool, c->n_ctx, c->n_seq, c->n_batch, c->n_seq,
                     d.kv_type == ENG_KV_F16, errbuf, errlen);
    if (e) {
        goto fail_pool;
    }
    e = WYE_ERR_NOMEM;
    c->slots = wye_calloc((size_t)c->n_seq, sizeof(*c->slots));
    c->btoks = wye_calloc((size_t)c->n_batch, sizeof(*c->btoks));
    c->out_slot = wye_calloc((size_t)c->n_seq, sizeof(*c->out_slot));
    c->out_epoch = wye_calloc((size_t)c->n_seq, sizeof(*c->out_epoch));
    if (!c->slots || !c->btoks || !c->out_slot || !c->out_epoch) {
        goto fail_slots;
    }
    c->piece_cap = eng_detok_out_max(m->tok) + 8;
    c->pend_cap = c->piece_cap + ENG_STOP_LEN_MAX + 8;
    for (int32_t i = 0; i < c->n_seq; i++) {
        struct slot *s = &c->slots[i];
        s->prompt = wye_calloc((size_t)c->n_ctx, sizeof(int32_t));
        s->piece = wye_malloc(c->piece_cap);
        s->pend = wye_malloc(c->pend_cap);
        s->kv_tok = wye_calloc((size_t)c->n_ctx, sizeof(int32_t));
        s->cst = wye_malloc(sizeof(*s->cst));
        s->tsim = wye_malloc(c->pend_cap);
        if (!s->prompt || !s->piece || !s->pend || !s->kv_tok || !s->cst || !s->tsim ||
            eng_sampler_create(m->hp.n_vocab, &s->smp) != WYE_OK) {
            goto fail_slots;
        }
    }
    *out = c;
    return WYE_OK;
fail_slots:
    snprintf(errbuf, errlen, "out of memory for %d sequences", c->n_seq);
    eng_ctx_destroy(c);
    return e;
fail_pool:
    if (c->own_pool) {
        eng_pool_destroy(c->pool);
    }
fail_ctx:
    wye_free(c);
fail:
    if (e == WYE_ERR_NOMEM && errbuf && errlen && !errbuf[0]) {
        snprintf(errbuf, errlen, "out of memory");
    }
    return e;
}

void eng_ctx_destroy(struct eng_ctx *c)
{
    if (!c) {
        return;
    }
    if (c->slots) {
        for (int32_t i = 0; i < c->n_seq; i++) {
            struct slot *s = &c->slots[i];
            wye_free(s->prompt);
            wye_free(s->piece);
            wye_free(s->pend);
            wye_free(s->kv_tok);
            wye_free(s->cst);
            wye_free(s->tsim);
            eng_sampler_destroy(s->smp);
        }
    }
    wye_free(c->slots);
    wye_free(c->btoks);
    wye_free(c->out_slot);
    wye_free(c->out_epoch);
    eng_cmask_destroy(c->cmask);
    eng_fwd_cleanup(&c->f);
    if (c->own_pool) {
        eng_pool_destroy(c->pool);
    }
    wye_free(c);
}

enum wye_err eng_ctx_eval(struct eng_ctx *c, int32_t seq, int32_t pos0, const int32_t *toks,
                          size_t n, float *logits)
{
    if (seq < 0 || seq >= c->n_seq || c->slots[seq].state != SLOT_FREE || pos0 < 0 || n == 0) {
        return WYE_ERR_INVAL;
    }
    if (pos0 >= c->n_ctx || n > (size_t)(c->n_ctx - pos0)) {
        return WYE_ERR_TOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        if (toks[i] < 0 || toks[i] >= c->m->hp.n_vocab) {
            return WYE_ERR_INVAL;
        }
    }
    for (size_t i0 = 0; i0 < n; i0 += (size_t)c->n_batch) {
        int32_t nb = (int32_t)(n - i0 < (size_t)c->n_batch ? n - i0 : (size_t)c->n_batch);
        for (int32_t j = 0; j < nb; j++) {
            struct eng_btok *b = &c->btoks[j];
            b->id = toks[i0 + (size_t)j];
            b->seq = seq;
            b->pos = pos0 + (int32_t)i0 + j;
            b->out = (logits && i0 + (size_t)j == n - 1) ? 0 : -1;
        }
        eng_fwd_run(&c->f, c->btoks, nb);
    }
    c->slots[seq].kv_n = 0; /* not tracked: nothing in this slot is reused */
    if (logits) {
        memcpy(logits, c->f.logits, (size_t)c->m->hp.n_vocab * sizeof(float));
    }
    return WYE_OK;
}

/* ---- sequences ---- */

int32_t eng_batch_n_active(const struct eng_ctx *c)
{
    return c->n_active;
}

int32_t eng_batch_n_runnable(const struct eng_ctx *c)
{
    int32_t n = 0;
    for (int32_t i = 0; i < c->n_seq; i++) {
        n += c->slots[i].state != SLOT_FREE && !c->slots[i].paused;
    }
    return n;
}

static size_t ctx_piece(void *arg, int32_t id, char *buf, size_t n)
{
    const struct eng_model *m = arg;
    return eng_token_to_piece(m->tok, id, buf, n, false);
}

static bool ctx_is_eog(void *arg, int32_t id)
{
    const struct eng_model *m = arg;
    return eng_tok_is_eog(m->tok, id);
}

/* How many leading tokens of prompt (at most max) slot s's cache already holds. */
static int32_t cached_prefix(const struct slot *s, const int32_t *prompt, int32_t max)
{
    int32_t n = 0;
    while (n < s->kv_n && n < max && s->kv_tok[n] == prompt[n]) {
        n++;
    }
    return n;
}

/* Another slot (free or busy: positions below its kv_n never change while it runs) whose
 * cache holds a longer prefix of this prompt than slot id's own (the system prompt of chats
 * arriving while others run): its K/V rows are copied into slot id, per layer, instead of
 * being recomputed. A copy is exactly what recomputing gives (a position's K/V depend only
 * on the tokens up to it, and the kernels give a token the same bits in any batch). Returns
 * the prompt tokens now cached in slot id (at most n_prompt - 1). */
static int32_t share_prefix(struct eng_ctx *c, int32_t id, const int32_t *prompt,
                            int32_t n_prompt, int32_t own)
{
    int32_t donor = -1, best = own;
    for (int32_t i = 0; i < c->n_seq; i++) {
        const struct slot *d = &c->slots[i];
        if (i == id || d->kv_n <= best) {
            continue;
        }
        int32_t lcp = cached_prefix(d, prompt, n_prompt - 1);
        if (lcp > best) {
            best = lcp;
            donor = i;
        }
    }
    if (donor < 0) {
        return own;
    }
    const struct eng_hparams *hp = &c->m->hp;
    size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t hd = (size_t)hp->head_dim, head = (size_t)c->n_ctx * hd; /* one KV head's block */
    for (int32_t l = 0; l < hp->n_layer; l++) {
        for (int32_t h = 0; h < hp->n_head_kv; h++) {
            size_t src = ((size_t)donor * (size_t)hp->n_layer + (size_t)l) * (size_t)c->n_ctx * kvd +
                         (size_t)h * head;
            size_t dst = ((size_t)id * (size_t)hp->n_layer + (size_t)l) * (size_t)c->n_ctx * kvd +
                         (size_t)h * head;
            size_t el = c->f.kv_elt, len = (size_t)best * hd * el;
            memcpy((char *)c->f.k_cache + dst * el, (char *)c->f.k_cache + src * el, len);
            memcpy((char *)c->f.v_cache + dst * el, (char *)c->f.v_cache + src * el, len);
        }
    }
    memcpy(c->slots[id].kv_tok, c->slots[donor].kv_tok, (size_t)best * sizeof(int32_t));
    return best;
}

enum wye_err eng_batch_add(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt,
                           const struct eng_gen_params *p, const struct eng_seq_ops *ops, void *arg,
                           const atomic_bool *cancel, int32_t *seq_id, char *errbuf, size_t errlen)
{
    *seq_id = -1;
    if (n_prompt == 0) {
        snprintf(errbuf, errlen, "the prompt is empty");
        return WYE_ERR_INVAL;
    }
    if (p->max_tokens < 0) {
        snprintf(errbuf, errlen, "max_tokens %d is negative", p->max_tokens);
        return WYE_ERR_INVAL;
    }
    if (n_prompt > (size_t)c->n_ctx ||
        (int64_t)n_prompt + (int64_t)p->max_tokens > (int64_t)c->n_ctx) {
        snprintf(errbuf, errlen,
                 "the prompt (%zu tokens) plus max_tokens (%d) exceeds the "
                 "context length (%d tokens)",
                 n_prompt, p->max_tokens, c->n_ctx);
        return WYE_ERR_TOOBIG;
    }
    if (n_prompt == (size_t)c->n_ctx) {
        snprintf(errbuf, errlen,
                 "the prompt (%zu tokens) leaves no room to generate in the "
                 "context length (%d tokens)",
                 n_prompt, c->n_ctx);
        return WYE_ERR_TOOBIG;
    }
    for (size_t i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= c->m->hp.n_vocab) {
            snprintf(errbuf, errlen, "prompt token %zu (id %d) is out of the vocabulary (%d)", i,
                     prompt[i], c->m->hp.n_vocab);
            return WYE_ERR_INVAL;
        }
    }
    for (int i = 0; i < ENG_STOP_MAX; i++) {
        if (p->stop[i] && strlen(p->stop[i]) > ENG_STOP_LEN_MAX) {
            snprintf(errbuf, errlen, "stop string %d is longer than %d bytes", i, ENG_STOP_LEN_MAX);
            return WYE_ERR_TOOBIG;
        }
    }
    size_t trig_len = p->trigger ? strlen(p->trigger) : 0;
    if (p->trigger && (!p->constraint || trig_len == 0 || trig_len > ENG_STOP_LEN_MAX)) {
        snprintf(errbuf, errlen,
                 p->constraint ? "the constraint trigger must be 1 to %d bytes"
                               : "a constraint trigger needs a constraint (at most %d bytes)",
                 ENG_STOP_LEN_MAX);
        return WYE_ERR_INVAL;
    }
    if (p->constraint) {
        int32_t budget = p->max_tokens > 0 ? p->max_tokens : c->n_ctx - (int32_t)n_prompt;
        uint32_t need = eng_constraint_min_bytes(p->constraint);
        if (p->trigger && p->trigger_in_value) {
            struct eng_cstate tst;
            eng_cstate_init(&tst, p->constraint);
            if (!eng_cstate_feed_n(p->constraint, &tst, p->trigger, trig_len)) {
                snprintf(errbuf, errlen,
                         "the constraint trigger '%s' does not start a value of the JSON schema",
                         p->trigger);
                return WYE_ERR_INVAL;
            }
            need = eng_cstate_min_close(p->constraint, &tst);
        }
        if (p->trigger && !p->constrain_first) {
            need = 0; /* checked when the trigger fires */
        }
        if (need > (uint32_t)budget) {
            snprintf(errbuf, errlen,
                     "max_tokens (%d) is too small for the JSON schema: its shortest valid "
                     "output takes %u tokens",
                     budget, need);
            return WYE_ERR_TOOBIG;
        }
        if (!c->cmask) {
            enum wye_err e = eng_cmask_create(c->m->n_vocab_tok, ctx_piece, ctx_is_eog, c->m,
                                              &c->cmask, errbuf, errlen);
            if (e) {
                return e;
            }
        }
    }
    /* The free slot whose cache already holds a prefix of this prompt (a system prompt,
     * the earlier turns of a conversation): those positions are not recomputed. Their K/V
     * are exactly what recomputing would give (a position depends only on the tokens up to
     * it), so the output does not change. Score: tokens reused minus 1/8 of the cached
     * tokens the new sequence would overwrite, so a lone shared BOS does not evict a long
     * conversation while an empty slot is free. */
    int32_t id = -1, best = 0;
    int64_t best_score = INT64_MIN;
    for (int32_t i = 0; i < c->n_seq; i++) {
        const struct slot *f = &c->slots[i];
        if (f->state != SLOT_FREE) {
            continue;
        }
        int32_t lcp = cached_prefix(f, prompt, (int32_t)n_prompt);
        int32_t reuse = lcp < (int32_t)n_prompt - 1 ? lcp : (int32_t)n_prompt - 1;
        int64_t score = 8 * (int64_t)reuse - (int64_t)(f->kv_n - lcp);
        if (score > best_score) {
            best_score = score;
            best = reuse;
            id = i;
        }
    }
    if (id < 0) {
        snprintf(errbuf, errlen, "all %d sequences of the context are busy", c->n_seq);
        return WYE_ERR_AGAIN;
    }
    struct slot *s = &c->slots[id];
    best = share_prefix(c, id, prompt, (int32_t)n_prompt, best);
    memcpy(s->prompt, prompt, n_prompt * sizeof(int32_t));
    s->n_prompt = (int32_t)n_prompt;
    /* At least the last prompt token is evaluated: its logits give the first token. */
    s->n_cached = best;
    s->n_past = s->n_cached;
    s->kv_n = s->n_cached;
    s->n_gen = 0;
    s->max_tokens = p->max_tokens > 0 ? p->max_tokens : c->n_ctx - (int32_t)n_prompt;
    s->last = -1;
    s->ignore_eos = p->ignore_eos;
    s->paused = false;
    eng_sampler_reset(s->smp, &p->sampling);
    size_t h0 = n_prompt > ENG_SAMPLER_HISTORY_MAX ? n_prompt - ENG_SAMPLER_HISTORY_MAX : 0;
    for (size_t i = h0; i < n_prompt; i++) {
        eng_sampler_accept(s->smp, prompt[i]);
    }
    /* The prompt goes through the detokenizer too (its text discarded), so that the answer
     * continues it: a leading space is dropped only when the prompt rendered no text (just
     * BOS), as SentencePiece decoding does. Prompt bytes of an incomplete character are
     * dropped: the caller already has the prompt's text. */
    eng_detok_init(&s->detok, c->m->tok);
    for (size_t i = 0; i < n_prompt; i++) {
        eng_detok_push(&s->detok, prompt[i], s->piece, c->piece_cap);
    }
    s->detok.n_pending = 0;
    s->n_pend = 0;
    s->n_stop = 0;
    s->cons = p->constraint;
    s->lazy = p->constraint && p->trigger;
    s->cons_on = s->cons && (!s->lazy || p->constrain_first);
    s->trig_in_value = s->lazy && p->trigger_in_value;
    s->announce = s->lazy && p->constrain_first;
    s->sim_on = s->closing = false;
    s->on_constraint = s->lazy ? p->on_constraint : NULL;
    s->trig_len = s->lazy ? trig_len : 0;
    if (s->lazy) {
        memcpy(s->trig, p->trigger, trig_len + 1);
    }
    if (s->cons) {
        eng_cstate_init(s->cst, s->cons);
        if (s->cons_on && s->trig_in_value) {
            (void)eng_cstate_feed_n(s->cons, s->cst, s->trig, s->trig_len); /* checked above */
        }
    }
    /* Stop strings could cut a JSON value short: not applied while a constraint is on. */
    for (int i = 0; i < ENG_STOP_MAX && (!s->cons || s->lazy); i++) {
        if (p->stop[i] && p->stop[i][0]) {
            s->stop_len[s->n_stop] = strlen(p->stop[i]);
            memcpy(s->stop[s->n_stop], p->stop[i], s->stop_len[s->n_stop] + 1);
            s->n_stop++;
        }
    }
    s->ops = ops;
    s->arg = arg;
    s->cancel = cancel;
    s->t_start = wye_now_ns();
    s->t_first = 0;
    s->state = SLOT_PREFILL;
    s->epoch++;
    c->n_active++;
    *seq_id = id;
    return WYE_OK;
}

static void finish(struct eng_ctx *c, int32_t id, enum eng_finish why, enum wye_err err)
{
    struct slot *s = &c->slots[id];
    if (s->state == SLOT_FREE) {
        return;
    }
    int64_t now = wye_now_ns();
    struct eng_seq_result r = {
        .finish = why,
        .err = err,
        .n_prompt = s->n_prompt,
        .n_prompt_cached = s->n_cached,
        .n_gen = s->n_gen,
        .t_prompt_ns = (s->t_first ? s->t_first : now) - s->t_start,
        .t_gen_ns = s->t_first ? now - s->t_first : 0,
    };
    const struct eng_seq_ops *ops = s->ops;
    void *arg = s->arg;
    s->state = SLOT_FREE;
    s->paused = false;
    c->n_active--;
    if (ops && ops->on_done) {
        ops->on_done(arg, &r);
    }
}

void eng_batch_remove(struct eng_ctx *c, int32_t seq_id)
{
    if (seq_id >= 0 && seq_id < c->n_seq) {
        finish(c, seq_id, ENG_FINISH_CANCELLED, WYE_OK);
    }
}

void eng_batch_resume(struct eng_ctx *c, int32_t seq_id)
{
    if (seq_id >= 0 && seq_id < c->n_seq) {
        c->slots[seq_id].paused = false;
    }
}

/* Hands text to the callback; false if the sequence ended (the callback said stop). */
static bool deliver(struct eng_ctx *c, int32_t id, const char *text, size_t len)
{
    struct slot *s = &c->slots[id];
    if (len == 0 || !s->ops || !s->ops->on_text) {
        return true;
    }
    enum eng_cb_ret r = s->ops->on_text(s->arg, text, len);
    if (s->state == SLOT_FREE) {
        return false; /* the callback removed its own sequence */
    }
    if (r == ENG_CB_STOP) {
        finish(c, id, ENG_FINISH_CANCELLED, WYE_OK);
        return false;
    }
    if (r == ENG_CB_PAUSE) {
        s->paused = true;
    }
    return true;
}

/* Tells the callback a lazy constraint started or ended; false if the sequence ended. */
static bool notify(struct eng_ctx *c, int32_t id, bool active)
{
    struct slot *s = &c->slots[id];
    if (!s->on_constraint) {
        return true;
    }
    enum eng_cb_ret r = s->on_constraint(s->arg, active);
    if (s->state == SLOT_FREE) {
        return false; /* the callback removed its own sequence */
    }
    if (r == ENG_CB_STOP) {
        finish(c, id, ENG_FINISH_CANCELLED, WYE_OK);
        return false;
    }
    if (r == ENG_CB_PAUSE) {
        s->paused = true;
    }
    return true;
}

/* The value of a lazy constraint is complete: free text again. */
static bool close_value(struct eng_ctx *c, int32_t id)
{
    struct slot *s = &c->slots[id];
    s->cons_on = false;
    s->closing = false;
    return notify(c, id, false);
}

/* The held-back window holds the trigger at tp: delivers the text before it, switches the
 * constraint on and delivers the trigger and the rest of the window (the start of the value).
 * Returns false if the sequence ended. */
static bool trigger_fire(struct eng_ctx *c, int32_t id, size_t tp)
{
    struct slot *s = &c->slots[id];
    size_t end = tp + s->trig_len;
    if (!deliver(c, id, s->pend, tp)) {
        return false;
    }
    if (!s->sim_on) {
        /* The sampling check did not see this trigger (the token's detokenized text differs
         * from its piece): the state comes from the text. */
        eng_cstate_init(s->cst, s->cons);
        if ((s->trig_in_value && !eng_cstate_feed_n(s->cons, s->cst, s->trig, s->trig_len)) ||
            !eng_cstate_feed_n(s->cons, s->cst, s->pend + end, s->n_pend - end)) {
            WYE_ERROR("constrained decoding: the text after the trigger is not a valid value");
            finish(c, id, ENG_FINISH_ERROR, WYE_ERR_INTERNAL);
            return false;
        }
    }
    s->sim_on = false;
    s->cons_on = true;
    size_t n = s->n_pend - tp;
    s->n_pend = 0; /* the bytes stay in pend until the next push */
    if (!notify(c, id, true) || !deliver(c, id, s->pend + tp, n)) {
        return false;
    }
    if (!eng_cstate_can_continue(s->cons, s->cst)) {
        return close_value(c, id);
    }
    return true;
}

/* Appends a delta to the held-back window and emits what can no longer start a stop string
 * (or the trigger of a lazy constraint). With final, everything left is emitted. Returns
 * false if the sequence ended. */
static bool push_text(struct eng_ctx *c, int32_t id, const char *text, size_t len, bool final)
{
    struct slot *s = &c->slots[id];
    if (s->cons_on || (s->n_stop == 0 && !s->lazy)) {
        return deliver(c, id, text, len);
    }
    WYE_ASSERT(s->n_pend + len <= c->pend_cap);
    memcpy(s->pend + s->n_pend, text, len);
    s->n_pend += len;
    /* Earliest complete stop string. */
    size_t hit = SIZE_MAX;
    for (int i = 0; i < s->n_stop; i++) {
        const char *f = memmem(s->pend, s->n_pend, s->stop[i], s->stop_len[i]);
        if (f && (size_t)(f - s->pend) < hit) {
            hit = (size_t)(f - s->pend);
        }
    }
    size_t tp = SIZE_MAX;
    if (s->lazy) {
        const char *f = memmem(s->pend, s->n_pend, s->trig, s->trig_len);
        tp = f ? (size_t)(f - s->pend) : SIZE_MAX;
    }
    if (hit != SIZE_MAX && hit <= tp) {
        if (deliver(c, id, s->pend, hit)) {
            finish(c, id, ENG_FINISH_STOP, WYE_OK);
        }
        return false;
    }
    if (tp != SIZE_MAX) {
        return trigger_fire(c, id, tp);
    }
    size_t keep_from = s->n_pend;
    if (!final) {
        /* The earliest suffix that is a proper prefix of some stop string (or of the
         * trigger) stays behind. */
        for (size_t i = 0; i < s->n_pend && keep_from == s->n_pend; i++) {
            size_t rest = s->n_pend - i;
            if (s->lazy && rest < s->trig_len && memcmp(s->pend + i, s->trig, rest) == 0) {
                keep_from = i;
                break;
            }
            for (int j = 0; j < s->n_stop; j++) {
                if (rest < s->stop_len[j] && memcmp(s->pend + i, s->stop[j], rest) == 0) {
                    keep_from = i;
                    break;
                }
            }
        }
    }
    if (!deliver(c, id, s->pend, keep_from)) {
        return false;
    }
    memmove(s->pend, s->pend + keep_from, s->n_pend - keep_from);
    s->n_pend -= keep_from;
    return true;
}

/* Ends a sequence that stopped by itself: flushes held-back text first. */
static void finish_flush(struct eng_ctx *c, int32_t id, enum eng_finish why)
{
    struct slot *s = &c->slots[id];
    size_t n = eng_detok_flush(&s->detok, s->piece, c->piece_cap);
    if (n == SIZE_MAX) {
        n = 0;
    }
    if (push_text(c, id, s->piece, n, true)) {
        finish(c, id, why, WYE_OK);
    }
}

static void on_sampled(struct eng_ctx *c, int32_t id, int32_t tok)
{
    struct slot *s = &c->slots[id];
    const struct eng_model *m = c->m;
    if (!s->t_first) {
        s->t_first = wye_now_ns();
    }
    s->n_gen++;
    eng_sampler_accept(s->smp, tok);
    if (s->announce) {
        s->announce = false;
        if (!notify(c, id, true)) {
            return;
        }
    }
    if (s->ops && s->ops->on_token) {
        enum eng_cb_ret r = s->ops->on_token(s->arg, tok);
        if (s->state == SLOT_FREE) {
            return; /* the callback removed its own sequence */
        }
        if (r == ENG_CB_STOP) {
            finish(c, id, ENG_FINISH_CANCELLED, WYE_OK);
            return;
        }
        if (r == ENG_CB_PAUSE) {
            s->paused = true;
        }
    }
    if ((!s->ignore_eos || s->cons_on) && eng_tok_is_eog(m->tok, tok)) {
        finish_flush(c, id, ENG_FINISH_STOP);
        return;
    }
    size_t n = eng_detok_push(&s->detok, tok, s->piece, c->piece_cap);
    if (n == SIZE_MAX) {
        n = 0;
    }
    if (!push_text(c, id, s->piece, n, false)) {
        return;
    }
    s->sim_on = false; /* used by trigger_fire within this token only */
    if (s->closing && !close_value(c, id)) {
        return;
    }
    if (s->n_gen >= s->max_tokens || s->n_past >= c->n_ctx) {
        finish_flush(c, id, ENG_FINISH_LENGTH);
        return;
    }
    s->last = tok;
    s->state = SLOT_GEN;
}

/* Masks logits to the tokens the slot's constraint allows (with the budget of tokens left),
 * samples, and advances the matcher. -1 if nothing is allowed (a matcher bug: its states
 * always have a completion). */
static int32_t sample_constrained(struct eng_ctx *c, struct slot *s, float *logits)
{
    int32_t n = c->m->n_vocab_tok;
    if (eng_cmask_compute(c->cmask, s->cons, s->cst, s->max_tokens - s->n_gen) == 0) {
        WYE_ERROR("constrained decoding: no token is allowed (bug)");
        return -1;
    }
    eng_cmask_apply(c->cmask, logits, n);
    int32_t tok = eng_sampler_sample(s->smp, logits, n);
    if (!eng_cmask_allowed(c->cmask, tok)) {
        /* A sampler edge (all survivors at probability 0): the best allowed token. */
        tok = -1;
        for (int32_t i = 0; i < n; i++) {
            if (eng_cmask_allowed(c->cmask, i) && (tok < 0 || logits[i] > logits[tok])) {
                tok = i;
            }
        }
    }
    if (!eng_cmask_advance(c->cmask, s->cons, s->cst, tok)) {
        WYE_ERROR("constrained decoding: token %d rejected after the mask allowed it", tok);
        return -1;
    }
    return tok;
}

enum trig_check { TRIG_NONE, TRIG_OK, TRIG_BAD };

/* Whether token tok, sampled in the free part of a lazy constraint, completes the trigger,
 * and if so whether the bytes after the trigger start a value that can still close within
 * the budget; with TRIG_OK, s->cst is the matcher state after the token. */
static enum trig_check trigger_check(struct eng_ctx *c, struct slot *s, int32_t tok)
{
    size_t n = s->n_pend;
    memcpy(s->tsim, s->pend, n);
    n += eng_token_to_piece(c->m->tok, tok, s->tsim + n, c->pend_cap - n, false);
    const char *f = memmem(s->tsim, n, s->trig, s->trig_len);
    if (!f) {
        return TRIG_NONE;
    }
    size_t tp = (size_t)(f - s->tsim), end = tp + s->trig_len;
    for (int i = 0; i < s->n_stop; i++) {
        const char *g = memmem(s->tsim, n, s->stop[i], s->stop_len[i]);
        if (g && (size_t)(g - s->tsim) <= tp) {
            return TRIG_NONE; /* a stop string ends the answer first */
        }
    }
    eng_cstate_init(s->cst, s->cons);
    if ((s->trig_in_value && !eng_cstate_feed_n(s->cons, s->cst, s->trig, s->trig_len)) ||
        !eng_cstate_feed_n(s->cons, s->cst, s->tsim + end, n - end)) {
        return TRIG_BAD;
    }
    int64_t left = (int64_t)s->max_tokens - s->n_gen - 1; /* tokens after this one */
    if (eng_cstate_can_continue(s->cons, s->cst) &&
        (int64_t)eng_cstate_min_close(s->cons, s->cst) > left) {
        return TRIG_BAD;
    }
    return TRIG_OK;
}

/* Samples in the free part of a lazy constraint: a token completing the trigger is taken
 * only if the value it opens can be completed (else it is banned and the sampler draws
 * again; after a few draws, the best token that is acceptable). */
static int32_t sample_lazy(struct eng_ctx *c, struct slot *s, float *logits)
{
    int32_t n = c->m->n_vocab_tok;
    int32_t tok = eng_sampler_sample(s->smp, logits, n);
    enum trig_check r = trigger_check(c, s, tok);
    for (int tries = 0; r == TRIG_BAD && tries < 8; tries++) {
        logits[tok] = -INFINITY;
        tok = eng_sampler_sample(s->smp, logits, n);
        r = trigger_check(c, s, tok);
    }
    if (r == TRIG_BAD) {
        logits[tok] = -INFINITY;
        int32_t best = -1;
        for (int32_t i = 0; i < n; i++) {
            if (logits[i] > -INFINITY && (best < 0 || logits[i] > logits[best]) &&
                trigger_check(c, s, i) != TRIG_BAD) {
                best = i;
            }
        }
        if (best < 0) {
            return -1;
        }
        tok = best;
        r = trigger_check(c, s, tok); /* leaves s->cst for this token */
    }
    s->sim_on = r == TRIG_OK;
    return tok;
}

enum wye_err eng_batch_step(struct eng_ctx *c)
{
    int32_t nb = 0, n_out = 0;
    for (int32_t i = 0; i < c->n_seq; i++) {
        struct slot *s = &c->slots[i];
        if (s->state != SLOT_FREE && s->cancel && atomic_load(s->cancel)) {
            finish(c, i, ENG_FINISH_CANCELLED, WYE_OK);
        }
    }
    /* Generating sequences first: one token each, so decoding never waits on prompts. */
    for (int32_t i = 0; i < c->n_seq; i++) {
        struct slot *s = &c->slots[i];
        if (s->state != SLOT_GEN || s->paused) {
            continue;
        }
        c->btoks[nb++] = (struct eng_btok){s->last, i, s->n_past, n_out};
        c->out_epoch[n_out] = s->epoch;
        c->out_slot[n_out++] = i;
    }
    for (int32_t i = 0; i < c->n_seq && nb < c->n_batch; i++) {
        struct slot *s = &c->slots[i];
        if (s->state != SLOT_PREFILL || s->paused) {
            continue;
        }
        int32_t left = s->n_prompt - s->n_past;
        int32_t room = c->n_batch - nb;
        int32_t take = left < room ? left : room;
        for (int32_t j = 0; j < take; j++) {
            int32_t pos = s->n_past + j;
            bool last = pos == s->n_prompt - 1;
            c->btoks[nb++] = (struct eng_btok){s->prompt[pos], i, pos, last ? n_out : -1};
            if (last) {
                c->out_epoch[n_out] = s->epoch;
                c->out_slot[n_out++] = i;
            }
        }
    }
    if (nb == 0) {
        return WYE_OK;
    }
    eng_fwd_run(&c->f, c->btoks, nb);
    for (int32_t j = 0; j < nb; j++) {
        struct slot *s = &c->slots[c->btoks[j].seq];
        s->kv_tok[c->btoks[j].pos] = c->btoks[j].id;
        s->kv_n = c->btoks[j].pos + 1;
        s->n_past++;
    }
    for (int32_t o = 0; o < n_out; o++) {
        int32_t id = c->out_slot[o];
        struct slot *s = &c->slots[id];
        if (s->state == SLOT_FREE || s->epoch != c->out_epoch[o]) {
            continue; /* removed (and maybe reused) by a callback earlier in this loop */
        }
        float *logits = c->f.logits + (size_t)o * (size_t)c->m->hp.n_vocab;
        int32_t tok;
        if (s->cons_on) {
            tok = sample_constrained(c, s, logits);
            if (tok < 0) {
                finish(c, id, ENG_FINISH_ERROR, WYE_ERR_INTERNAL);
                continue;
            }
            s->closing = s->lazy && !eng_cstate_can_continue(s->cons, s->cst);
        } else if (s->lazy) {
            tok = sample_lazy(c, s, logits);
            if (tok < 0) {
                finish(c, id, ENG_FINISH_ERROR, WYE_ERR_INTERNAL);
                continue;
            }
        } else {
            tok = eng_sampler_sample(s->smp, logits, c->m->n_vocab_tok);
        }
        on_sampled(c, id, tok);
    }
    return WYE_OK;
}

struct gen_wrap {
    const struct eng_seq_ops *ops;
    void *arg;
    struct eng_seq_result *res;
    enum eng_cb_ret (*on_constraint)(void *arg, bool active);
};

static enum eng_cb_ret gen_on_text(void *arg, const char *text, size_t len)
{
    struct gen_wrap *w = arg;
    return w->ops && w->ops->on_text ? w->ops->on_text(w->arg, text, len) : ENG_CB_CONTINUE;
}

static enum eng_cb_ret gen_on_token(void *arg, int32_t id)
{
    struct gen_wrap *w = arg;
    return w->ops && w->ops->on_token ? w->ops->on_token(w->arg, id) : ENG_CB_CONTINUE;
}

static void gen_on_done(void *arg, const struct eng_seq_result *res)
{
    struct gen_wrap *w = arg;
    *w->res = *res;
    if (w->ops && w->ops->on_done) {
        w->ops->on_done(w->arg, res);
    }
}

static enum eng_cb_ret gen_on_constraint(void *arg, bool active)
{
    struct gen_wrap *w = arg;
    return w->on_constraint(w->arg, active);
}

static const struct eng_seq_ops gen_ops = {gen_on_text, gen_on_token, gen_on_done};

enum wye_err eng_generate(struct eng_ctx *c, const int32_t *prompt, size_t n_prompt,
                          const struct eng_gen_params *p, const struct eng_seq_ops *ops, void *arg,
                          const atomic_bool *cancel, struct eng_seq_result *res, char *errbuf,
                          size_t errlen)
{
    struct gen_wrap w = {ops, arg, res, p->on_constraint};
    struct eng_gen_params gp = *p; /* on_constraint gets the caller's arg too */
    gp.on_constraint = p->on_constraint ? gen_on_constraint : NULL;
    int32_t id;
    memset(res, 0, sizeof(*res));
    enum wye_err e =
        eng_batch_add(c, prompt, n_prompt, &gp, &gen_ops, &w, cancel, &id, errbuf, errlen);
    if (e) {
        return e;
    }
    while (c->slots[id].state != SLOT_FREE) {
        /* A blocking caller has no one else to resume a paused sequence. */
        c->slots[id].paused = false;
        e = eng_batch_step(c);
        if (e) {
            eng_batch_remove(c, id);
            return e;
        }
    }
    return res->finish == ENG_FINISH_CANCELLED ? WYE_ERR_CANCELED : WYE_OK;
}
