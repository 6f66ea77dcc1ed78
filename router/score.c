/* The complexity score: a logistic model over standardised features, its weights JSON (load
 * and save), scoring with the top contributing features, and their JSON text for the
 * x-wye-score header, response.done and the ledger. Scoring allocates nothing and may run on
 * any thread (the lws thread in the router); loading allocates through cJSON and runs once at
 * start or in the CLI. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "router/score.h"

#define WEIGHTS_FORMAT "wye-router-weights"
#define WEIGHTS_JSON_MAX (64 * 1024)

static void set_err(char *err, size_t errlen, const char *msg, const char *name)
{
    if (err && errlen) {
        snprintf(err, errlen, "router weights: %s%s%s", msg, name ? ": " : "", name ? name : "");
    }
}

static enum wye_err get_num(const cJSON *obj, const char *key, bool required, float *out,
                            const char *ctx, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    char where[96];
    snprintf(where, sizeof(where), "%s%s'%s'", ctx ? ctx : "", ctx ? " " : "", key);
    if (!it) {
        if (required) {
            set_err(err, errlen, "missing number", where);
            return WYE_ERR_INVAL;
        }
        return WYE_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || fabs(it->valuedouble) > 1e30) {
        set_err(err, errlen, "not a finite number", where);
        return WYE_ERR_INVAL;
    }
    *out = (float)it->valuedouble;
    return WYE_OK;
}

static void model_reset(struct rt_score_model *m)
{
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < RT_F__COUNT; i++) {
        m->std[i] = 1.0f;
    }
    m->threshold = 0.5f;
}

static enum wye_err parse_model(const cJSON *root, struct rt_score_model *m, char *err,
                                size_t errlen)
{
    enum wye_err e;
    if (!cJSON_IsObject(root)) {
        set_err(err, errlen, "expected a JSON object", NULL);
        return WYE_ERR_INVAL;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (fmt && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, WEIGHTS_FORMAT) != 0)) {
        set_err(err, errlen, "'format' is not", WEIGHTS_FORMAT);
        return WYE_ERR_INVAL;
    }
    if ((e = get_num(root, "bias", true, &m->bias, NULL, err, errlen)) ||
        (e = get_num(root, "threshold", true, &m->threshold, NULL, err, errlen))) {
        return e;
    }
    if (!(m->threshold >= 0.0f && m->threshold <= 1.0f)) {
        set_err(err, errlen, "'threshold' must be in [0,1]", NULL);
        return WYE_ERR_INVAL;
    }
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(root, "features");
    if (!cJSON_IsArray(feats)) {
        set_err(err, errlen, "missing array", "'features'");
        return WYE_ERR_INVAL;
    }
    bool seen[RT_F__COUNT] = {0};
    const cJSON *f;
    cJSON_ArrayForEach(f, feats)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsObject(f) || !cJSON_IsString(name)) {
            set_err(err, errlen, "each 'features' entry needs a string 'name'", NULL);
            return WYE_ERR_INVAL;
        }
        int i = rt_feature_index(name->valuestring);
        if (i < 0) {
            set_err(err, errlen, "unknown feature", name->valuestring);
            return WYE_ERR_INVAL;
        }
        if (seen[i]) {
            set_err(err, errlen, "duplicate feature", name->valuestring);
            return WYE_ERR_INVAL;
        }
        seen[i] = true;
        if ((e = get_num(f, "mean", true, &m->mean[i], name->valuestring, err, errlen)) ||
            (e = get_num(f, "std", true, &m->std[i], name->valuestring, err, errlen)) ||
            (e = get_num(f, "weight", true, &m->w[i], name->valuestring, err, errlen))) {
            return e;
        }
        if (!(m->std[i] > 1e-12f)) {
            set_err(err, errlen, "'std' must be positive for feature", name->valuestring);
            return WYE_ERR_INVAL;
        }
    }
    return WYE_OK;
}

enum wye_err rt_score_model_load_json(const char *text, size_t len, struct rt_score_model *out,
                                      char *err, size_t errlen)
{
    struct rt_score_model m;
    model_reset(&m);
    if (len > WEIGHTS_JSON_MAX) {
        set_err(err, errlen, "file larger than 64 KiB", NULL);
        return WYE_ERR_TOOBIG;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        /* cJSON reports allocation failure and bad syntax alike. If a small allocation now
         * fails too, call it out of memory rather than blame the text. */
        void *probe = wye_malloc(64);
        wye_free(probe);
        const char *at = cJSON_GetErrorPtr();
        if (probe && at && at >= text && at <= text + len) {
            char msg[64];
            snprintf(msg, sizeof(msg), "invalid JSON at byte %zu", (size_t)(at - text));
            set_err(err, errlen, msg, NULL);
            return WYE_ERR_PARSE;
        }
        set_err(err, errlen, "out of memory while parsing", NULL);
        return WYE_ERR_NOMEM;
    }
    enum wye_err e = parse_model(root, &m, err, errlen);
    cJSON_Delete(root);
    if (e) {
        return e;
    }
    *out = m;
    return WYE_OK;
}

enum wye_err rt_score_model_default(struct rt_score_model *out, char *err, size_t errlen)
{
    size_t len;
    const char *text = rt_score_model_default_json(&len);
    return rt_score_model_load_json(text, len, out, err, errlen);
}

enum wye_err rt_score_model_to_json(const struct rt_score_model *m, char **out)
{
    struct wye_buf b;
    enum wye_err e;
    wye_buf_init(&b, WEIGHTS_JSON_MAX);
    e = wye_buf_printf(&b,
                       "{\n  \"format\": \"%s\",\n  \"version\": 1,\n  \"bias\": %.9g,\n"
                       "  \"threshold\": %.9g,\n  \"features\": [\n",
                       WEIGHTS_FORMAT, (double)m->bias, (double)m->threshold);
    for (int i = 0; !e && i < RT_F__COUNT; i++) {
        e = wye_buf_printf(&b,
                           "    {\"name\": \"%s\", \"mean\": %.9g, \"std\": %.9g, "
                           "\"weight\": %.9g}%s\n",
                           rt_feature_name(i), (double)m->mean[i], (double)m->std[i],
                           (double)m->w[i], i + 1 < RT_F__COUNT ? "," : "");
    }
    if (!e) {
        e = wye_buf_append_str(&b, "  ]\n}\n");
    }
    if (e) {
        wye_buf_cleanup(&b);
        return e;
    }
    *out = wye_buf_steal(&b, NULL);
    return WYE_OK;
}

void rt_score(const struct rt_score_model *m, const struct rt_features *f, int k,
              struct rt_score_result *out)
{
    float contrib[RT_F__COUNT];
    double logit = m->bias;
    for (int i = 0; i < RT_F__COUNT; i++) {
        float x = f->v[i];
        if (!isfinite(x)) {
            x = m->mean[i]; /* never happens for extracted features; keeps the score defined */
        }
        float z = (x - m->mean[i]) / m->std[i];
        z = z < -RT_Z_MAX ? -RT_Z_MAX : z > RT_Z_MAX ? RT_Z_MAX : z;
        contrib[i] = m->w[i] * z;
        logit += contrib[i];
    }
    out->score = (float)(1.0 / (1.0 + exp(-logit)));
    out->remote = out->score >= m->threshold;
    if (k > RT_TOPK_MAX) {
        k = RT_TOPK_MAX;
    }
    /* Selection of the k largest |contribution|; k and the feature count are small. */
    bool used[RT_F__COUNT] = {0};
    out->n_top = 0;
    for (int t = 0; t < k; t++) {
        int best = -1;
        for (int i = 0; i < RT_F__COUNT; i++) {
            if (!used[i] && contrib[i] != 0.0f &&
                (best < 0 || fabsf(contrib[i]) > fabsf(contrib[best]))) {
                best = i;
            }
        }
        if (best < 0) {
            break;
        }
        used[best] = true;
        out->top[out->n_top].feat = best;
        out->top[out->n_top].contribution = contrib[best];
        out->n_top++;
    }
}

enum wye_err rt_score_reasons_json(const struct rt_score_result *r, char *buf, size_t len)
{
    size_t at = 0;
    if (len == 0) {
        return WYE_ERR_TOOBIG;
    }
    buf[0] = '\0';
    int n = snprintf(buf, len, "[");
    at = (size_t)n;
    for (int i = 0; i < r->n_top && at < len; i++) {
        n = snprintf(buf + at, len - at, "%s{\"feature\":\"%s\",\"contribution\":%.3f}",
                     i ? "," : "", rt_feature_name(r->top[i].feat), (double)r->top[i].contribution);
        if (n < 0) {
            break;
        }
        at += (size_t)n;
    }
    if (at + 2 > len) {
        snprintf(buf, len, "%s", len >= 3 ? "[]" : "");
        return WYE_ERR_TOOBIG;
    }
    buf[at++] = ']';
    buf[at] = '\0';
    return WYE_OK;
}
