/* The router: checks the model a request names and hands it to a backend. In this version
 * every request goes to the remote upstream (upstream.c); "auto" and the configured upstream
 * model name are accepted and sent upstream as cfg->upstream.model, any other name is refused
 * with NOTFOUND. Submit runs on the caller's thread (the lws thread) and only queues. */
#include "router/router.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "router/upstream.h"

struct rt_router {
    const struct conf_config *cfg;
    struct rt_upstream *up; /* NULL when no upstream is configured */
};

struct rt_router *rt_router_create(const struct conf_config *cfg)
{
    struct rt_router *rt = wye_calloc(1, sizeof(*rt));
    if (!rt) {
        return NULL;
    }
    rt->cfg = cfg;
    if (cfg->upstream.base_url) {
        rt->up = rt_upstream_create(&cfg->upstream);
        if (!rt->up) {
            wye_free(rt);
            return NULL;
        }
    }
    return rt;
}

enum wye_err rt_router_start(struct rt_router *rt)
{
    return rt->up ? rt_upstream_start(rt->up) : WYE_OK;
}

void rt_router_stop(struct rt_router *rt)
{
    if (rt && rt->up) {
        rt_upstream_stop(rt->up);
    }
}

void rt_router_destroy(struct rt_router *rt)
{
    if (!rt) {
        return;
    }
    rt_upstream_destroy(rt->up);
    wye_free(rt);
}

enum wye_err rt_router_submit(struct rt_router *rt, struct wye_chat_req *req, struct wye_sink sink,
                              char *errbuf, size_t errlen)
{
    const struct conf_upstream *u = &rt->cfg->upstream;
    if (!rt->up) {
        snprintf(errbuf, errlen, "no upstream configured");
        wye_chat_req_destroy(req);
        return WYE_ERR_NOTFOUND;
    }
    /* with no configured name, whatever the client names goes upstream as is */
    if (u->model && req->model && strcmp(req->model, "auto") != 0 &&
        strcmp(req->model, u->model) != 0) {
        snprintf(errbuf, errlen, "model '%.100s' not found", req->model);
        wye_chat_req_destroy(req);
        return WYE_ERR_NOTFOUND;
    }
    return rt_upstream_submit(rt->up, req, sink, errbuf, errlen);
}

static enum wye_err model_entry(struct wye_buf *out, const char *id, const char *owner, bool first)
{
    enum wye_err err = wye_buf_append_str(out, first ? "{\"id\":" : ",{\"id\":");
    if (!err) {
        err = wye_buf_append_json_str(out, id, strlen(id));
    }
    if (!err) {
        err =
            wye_buf_printf(out, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}", owner);
    }
    return err;
}

enum wye_err rt_router_models_json(struct rt_router *rt, struct wye_buf *out)
{
    size_t len0 = out->len;
    enum wye_err err = wye_buf_append_str(out, "[");
    if (!err && rt->up) {
        err = model_entry(out, "auto", "wye", true);
        if (!err && rt->cfg->upstream.model) {
            err = model_entry(out, rt->cfg->upstream.model, "upstream", false);
        }
    }
    if (!err) {
        err = wye_buf_append_str(out, "]");
    }
    if (err) {
        out->len = len0; /* leave out as it was */
        if (out->data) {
            out->data[len0] = '\0';
        }
    }
    return err;
}

void rt_router_stats(struct rt_router *rt, struct rt_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (rt->up) {
        rt_upstream_stats(rt->up, out);
    }
}
