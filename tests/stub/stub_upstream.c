/* The stand-in OpenAI-compatible upstream (see stub_upstream.h for the directives). One thread
 * runs a poll() loop over the listening socket, a wake pipe and every connection. A request is
 * turned at once into its whole response: bytes plus "segments" saying how far the response
 * may be written at which time, and what happens after the last one (keep the connection,
 * close it, or hang). Test code: plain malloc, aborts on allocation failure. */
#include "tests/stub/stub_upstream.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STUB_CONNS_MAX 1024
#define STUB_REQ_MAX (4 << 20)
#define STUB_FAIL_KEYS_MAX 64

enum { AFTER_KEEP, AFTER_CLOSE, AFTER_HANG };

struct stub_seg {
    size_t end;     /* the response may be written up to here ... */
    int64_t due_ns; /* ... from this time on */
};

struct stub_buf {
    char *p;
    size_t len, cap;
};

struct stub_conn {
    int fd;
    struct stub_buf in;
    struct stub_buf out;
    size_t sent;
    struct stub_seg *segs;
    size_t n_segs, segs_cap, seg_idx;
    int after;
    bool responding;
    bool split;
    bool continued; /* 100 Continue sent for the request being read */
};

struct stub_fail_key {
    char *text;
    int count;
};

struct stub_upstream {
    int lfd;
    int wake[2];
    int port;
    bool quiet;
    pthread_t thread;
    atomic_bool stop;
    atomic_long n_conns, n_requests, n_active;
    atomic_long n_aborts;          /* peers that closed while their response was active */
    _Atomic int64_t last_abort_ns; /* CLOCK_MONOTONIC when the stub saw the last one */
    pthread_mutex_t lock;
    char *last_body; /* guarded by lock */
    char *last_auth; /* guarded by lock */
    /* stub thread only */
    struct stub_conn *conns[STUB_CONNS_MAX];
    size_t n_open;
    struct stub_fail_key fails[STUB_FAIL_KEYS_MAX];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        abort();
    }
    return q;
}

static void buf_add(struct stub_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct stub_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_printf(struct stub_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void buf_printf(struct stub_buf *b, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = xrealloc(NULL, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_add(b, big, (size_t)n);
    free(big);
}

static void buf_json_str(struct stub_buf *b, const char *s, size_t n)
{
    buf_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_add(b, &s[i], 1);
        }
    }
    buf_str(b, "\"");
}

/* ---- building a response ---- */

struct plan {
    struct stub_conn *c;
    int64_t t_ns; /* the due time of the next segment */
    bool crlf, comments;
    bool coalesce; /* events go to pend and leave as one HTTP chunk per segment */
    struct stub_buf pend;
};

static void flush_pend(struct plan *pl)
{
    if (pl->pend.len > 0) {
        buf_printf(&pl->c->out, "%zx\r\n", pl->pend.len);
        buf_add(&pl->c->out, pl->pend.p, pl->pend.len);
        buf_str(&pl->c->out, "\r\n");
        pl->pend.len = 0;
    }
}

static void seg_mark(struct plan *pl)
{
    struct stub_conn *c = pl->c;
    flush_pend(pl);
    if (c->n_segs == c->segs_cap) {
        c->segs_cap = c->segs_cap ? c->segs_cap * 2 : 16;
        c->segs = xrealloc(c->segs, c->segs_cap * sizeof(*c->segs));
    }
    c->segs[c->n_segs].end = c->out.len;
    c->segs[c->n_segs].due_ns = pl->t_ns;
    c->n_segs++;
}

/* One SSE event as one HTTP chunk. */
static void sse_event(struct plan *pl, const char *data, size_t n)
{
    const char *eol = pl->crlf ? "\r\n" : "\n";
    struct stub_buf ev = {0};
    if (pl->comments) {
        buf_printf(&ev, ": stub%s", eol);
    }
    buf_str(&ev, "data: ");
    buf_add(&ev, data, n);
    buf_printf(&ev, "%s%s", eol, eol);
    buf_add(&pl->pend, ev.p, ev.len);
    if (!pl->coalesce) {
        flush_pend(pl);
    }
    free(ev.p);
}

static void chunk_json(struct plan *pl, const char *model, const char *delta, const char *finish)
{
    struct stub_buf j = {0};
    buf_str(&j, "{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion.chunk\",\"created\":"
                "1700000000,\"model\":");
    buf_json_str(&j, model, strlen(model));
    buf_printf(&j, ",\"choices\":[{\"index\":0,\"delta\":{%s},\"finish_reason\":", delta);
    if (finish) {
        buf_printf(&j, "\"%s\"}]}", finish);
    } else {
        buf_str(&j, "null}]}");
    }
    sse_event(pl, j.p, j.len);
    free(j.p);
}

struct opts {
    int n;
    int delay_ms;
    int first_byte_delay_ms;
    int cut_after;
    int stall_after;
    int status;
    int retry_after;
    int fail_first;
    bool malformed, error_in_stream, split, tools, no_usage, no_finish, no_done, comments, crlf;
    bool coalesce;
    int pad;    /* 'x' bytes appended to every generated delta */
    int stream; /* -1: as the request says */
};

static void parse_opts(const char *line, size_t n, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n = 5;
    o->cut_after = -1;
    o->stall_after = -1;
    o->retry_after = -1;
    o->stream = -1;
    size_t i = 5; /* after "#stub" */
    while (i < n) {
        while (i < n && line[i] == ' ') {
            i++;
        }
        size_t k = i;
        while (k < n && line[k] != ' ') {
            k++;
        }
        char kv[64];
        size_t l = k - i < sizeof(kv) - 1 ? k - i : sizeof(kv) - 1;
        memcpy(kv, line + i, l);
        kv[l] = '\0';
        i = k;
        char *eq = strchr(kv, '=');
        if (!eq) {
            continue;
        }
        *eq = '\0';
        int v = atoi(eq + 1);
        if (strcmp(kv, "n") == 0) {
            o->n = v;
        } else if (strcmp(kv, "delay_ms") == 0) {
            o->delay_ms = v;
        } else if (strcmp(kv, "first_byte_delay_ms") == 0) {
            o->first_byte_delay_ms = v;
        } else if (strcmp(kv, "cut_after") == 0) {
            o->cut_after = v;
        } else if (strcmp(kv, "stall_after") == 0) {
            o->stall_after = v;
        } else if (strcmp(kv, "status") == 0) {
            o->status = v;
        } else if (strcmp(kv, "retry_after") == 0) {
            o->retry_after = v;
        } else if (strcmp(kv, "fail_first") == 0) {
            o->fail_first = v;
        } else if (strcmp(kv, "malformed") == 0) {
            o->malformed = v != 0;
        } else if (strcmp(kv, "error_in_stream") == 0) {
            o->error_in_stream = v != 0;
        } else if (strcmp(kv, "split") == 0) {
            o->split = v != 0;
        } else if (strcmp(kv, "tools") == 0) {
            o->tools = v != 0;
        } else if (strcmp(kv, "no_usage") == 0) {
            o->no_usage = v != 0;
        } else if (strcmp(kv, "no_finish") == 0) {
            o->no_finish = v != 0;
        } else if (strcmp(kv, "no_done") == 0) {
            o->no_done = v != 0;
        } else if (strcmp(kv, "comments") == 0) {
            o->comments = v != 0;
        } else if (strcmp(kv, "coalesce") == 0) {
            o->coalesce = v != 0;
        } else if (strcmp(kv, "crlf") == 0) {
            o->crlf = v != 0;
        } else if (strcmp(kv, "stream") == 0) {
            o->stream = v;
        } else if (strcmp(kv, "pad") == 0) {
            o->pad = v < 0 ? 0 : v > 65536 ? 65536 : v;
        }
    }
}

static void simple_response(struct plan *pl, int status, const char *extra, const char *body)
{
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Error";
    buf_printf(
        &pl->c->out,
        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
        status, reason, strlen(body), extra ? extra : "", body);
    seg_mark(pl);
}

/* The text of the last user message: a string, or text parts joined. */
static void last_user_text(const cJSON *msgs, struct stub_buf *out, size_t *total_chars)
{
    const cJSON *m;
    const cJSON *last = NULL;
    *total_chars = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(content)) {
            *total_chars += strlen(content->valuestring);
        } else if (cJSON_IsArray(content)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (cJSON_IsString(t)) {
                    *total_chars += strlen(t->valuestring);
                }
            }
        }
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0) {
            last = content;
        }
    }
    if (cJSON_IsString(last)) {
        buf_add(out, last->valuestring, strlen(last->valuestring));
    } else if (cJSON_IsArray(last)) {
        const cJSON *part;
        cJSON_ArrayForEach(part, last)
        {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(t)) {
                buf_add(out, t->valuestring, strlen(t->valuestring));
            }
        }
    }
    if (!out->p) {
        buf_str(out, "");
    }
}

static int fail_counter(struct stub_upstream *s, const char *text, size_t n)
{
    for (int i = 0; i < STUB_FAIL_KEYS_MAX; i++) {
        struct stub_fail_key *k = &s->fails[i];
        if (k->text && strlen(k->text) == n && memcmp(k->text, text, n) == 0) {
            return ++k->count;
        }
        if (!k->text) {
            k->text = xrealloc(NULL, n + 1);
            memcpy(k->text, text, n);
            k->text[n] = '\0';
            k->count = 1;
            return 1;
        }
    }
    return 1 << 30; /* table full: behave as "after the failures" */
}

static void chat_response(struct stub_upstream *s, struct plan *pl, const char *body, size_t blen)
{
    cJSON *req = cJSON_ParseWithLength(body, blen);
    if (!cJSON_IsObject(req)) {
        cJSON_Delete(req);
        simple_response(pl, 400, NULL,
                        "{\"error\":{\"message\":\"stub: the body is not a JSON object\","
                        "\"type\":\"invalid_request_error\"}}");
        return;
    }
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(req, "model");
    char model[101];
    snprintf(model, sizeof(model), "%s", cJSON_IsString(jm) ? jm->valuestring : "stub-model");
    bool req_stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
    bool include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    char tool_name[101] = "get_weather";
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "function"), "name");
    if (cJSON_IsString(fn)) {
        snprintf(tool_name, sizeof(tool_name), "%s", fn->valuestring);
    }
    struct stub_buf text = {0};
    size_t total_chars = 0;
    last_user_text(cJSON_GetObjectItemCaseSensitive(req, "messages"), &text, &total_chars);
    cJSON_Delete(req);

    struct opts o;
    struct stub_buf piece = {0}; /* one delta's JSON members */
    bool directive = strncmp(text.p, "#stub", 5) == 0;
    char **words = NULL;
    size_t n_words = 0;
    if (directive) {
        size_t ll = strcspn(text.p, "\r\n");
        parse_opts(text.p, ll, &o);
        if (o.fail_first > 0) {
            if (!o.status) {
                o.status = 500;
            }
            if (fail_counter(s, text.p, ll) > o.fail_first) {
                o.status = 0;
            }
        }
        if (o.n < 0) {
            o.n = 0;
        }
        if (o.n > 1000000) {
            o.n = 1000000;
        }
    } else {
        parse_opts("#stub", 5, &o);
        for (char *p = text.p; *p;) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
                p++;
            }
            if (!*p) {
                break;
            }
            char *e = p;
            while (*e && *e != ' ' && *e != '\t' && *e != '\n' && *e != '\r') {
                e++;
            }
            words = xrealloc(words, (n_words + 1) * sizeof(*words));
            size_t wl = (size_t)(e - p) + (n_words ? 1 : 0);
            words[n_words] = xrealloc(NULL, wl + 1);
            snprintf(words[n_words], wl + 1, "%s%.*s", n_words ? " " : "", (int)(e - p), p);
            n_words++;
            p = e;
        }
        o.n = (int)n_words;
    }
    pl->c->split = o.split;
    pl->crlf = o.crlf;
    pl->comments = o.comments;
    pl->coalesce = o.coalesce;
    pl->t_ns += (int64_t)o.first_byte_delay_ms * 1000000;

    if (o.status) {
        char extra[64] = "";
        if (o.retry_after >= 0) {
            snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", o.retry_after);
        }
        char eb[200];
        snprintf(eb, sizeof(eb),
                 "{\"error\":{\"message\":\"stub error %d\",\"type\":\"stub_error\",\"code\":%d}}",
                 o.status, o.status);
        simple_response(pl, o.status, extra, eb);
        goto out;
    }
    int n = o.tools ? 3 : o.n;
    if (o.stream == 0 || (o.stream < 0 && !req_stream)) {
        struct stub_buf all = {0};
        buf_str(&all, "");
        for (int i = 0; i < n && !o.tools; i++) {
            if (words) {
                buf_add(&all, words[i], strlen(words[i]));
            } else {
                buf_printf(&all, "%st%d", i ? " " : "", i);
            }
        }
        struct stub_buf j = {0};
        buf_str(&j,
                "{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion\",\"created\":1700000000,"
                "\"model\":");
        buf_json_str(&j, model, strlen(model));
        buf_str(&j, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        if (o.tools) {
            buf_printf(&j,
                       "null,\"tool_calls\":[{\"id\":\"call_stub_0\",\"type\":\"function\","
                       "\"function\":{\"name\":\"%s\",\"arguments\":\"{\\\"city\\\": "
                       "\\\"Paris\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]",
                       tool_name);
        } else {
            buf_json_str(&j, all.p, all.len);
            buf_str(&j, "},\"finish_reason\":\"stop\"}]");
        }
        if (!o.no_usage) {
            buf_printf(&j,
                       ",\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%d,"
                       "\"total_tokens\":%zu}",
                       (total_chars + 3) / 4, n, (total_chars + 3) / 4 + (size_t)n);
        }
        buf_str(&j, "}");
        simple_response(pl, 200, NULL, j.p);
        free(all.p);
        free(j.p);
        goto out;
    }
    buf_str(&pl->c->out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < n; i++) {
        if (i == o.cut_after || i == o.stall_after) {
            seg_mark(pl);
            pl->c->after = i == o.cut_after ? AFTER_CLOSE : AFTER_HANG;
            goto out;
        }
        if (i > 0) {
            seg_mark(pl);
            pl->t_ns += (int64_t)o.delay_ms * 1000000;
        }
        piece.len = 0;
        if (o.tools) {
            static const char *const args[] = {"", "{\\\"city\\\":", " \\\"Paris\\\"}"};
            if (i == 0) {
                buf_printf(&piece,
                           "\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
                           "[{\"index\":0,\"id\":\"call_stub_0\",\"type\":\"function\","
                           "\"function\":{\"name\":\"%s\",\"arguments\":\"\"}}]",
                           tool_name);
            } else {
                buf_printf(&piece,
                           "\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"%s\"}}]",
                           args[i]);
            }
        } else {
            buf_str(&piece, i == 0 ? "\"role\":\"assistant\",\"content\":" : "\"content\":");
            if (words) {
                buf_json_str(&piece, words[i], strlen(words[i]));
            } else {
                buf_printf(&piece, "\"%st%d", i ? " " : "", i);
                for (int k = 0; k < o.pad; k++) {
                    buf_add(&piece, "x", 1);
                }
                buf_str(&piece, "\"");
            }
        }
        chunk_json(pl, model, piece.p, NULL);
        if (i == 0 && o.malformed) {
            static const char bad[] = "{\"choices\":[{\"delta\":{\"content\":\"oops\"";
            sse_event(pl, bad, sizeof(bad) - 1);
        }
        if (i == 0 && o.error_in_stream) {
            static const char err[] =
                "{\"error\":{\"message\":\"stub stream error\",\"type\":\"server_error\"}}";
            sse_event(pl, err, sizeof(err) - 1);
        }
    }
    if (n == o.cut_after || n == o.stall_after) {
        seg_mark(pl);
        pl->c->after = n == o.cut_after ? AFTER_CLOSE : AFTER_HANG;
        goto out;
    }
    if (!o.no_finish) {
        chunk_json(pl, model, "", o.tools ? "tool_calls" : "stop");
    }
    if (include_usage && !o.no_usage) {
        struct stub_buf u = {0};
        buf_str(&u, "{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion.chunk\",\"created\":"
                    "1700000000,\"model\":");
        buf_json_str(&u, model, strlen(model));
        buf_printf(&u,
                   ",\"choices\":[],\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%d,"
                   "\"total_tokens\":%zu}}",
                   (total_chars + 3) / 4, n, (total_chars + 3) / 4 + (size_t)n);
        sse_event(pl, u.p, u.len);
        free(u.p);
    }
    if (!o.no_done) {
        sse_event(pl, "[DONE]", 6);
    }
    flush_pend(pl);
    buf_str(&pl->c->out, "0\r\n\r\n");
    seg_mark(pl);
out:
    free(piece.p);
    for (size_t i = 0; i < n_words; i++) {
        free(words[i]);
    }
    free(words);
    free(text.p);
}

/* ---- connections ---- */

/* The peer went away (EOF or a socket error) while a response was being written or held:
 * what a cancelled upstream request looks like from here. Records the instant. */
static void note_abort(struct stub_upstream *s, const struct stub_conn *c)
{
    if (!c->responding) {
        return;
    }
    int64_t t = now_ns();
    atomic_store(&s->last_abort_ns, t);
    atomic_fetch_add(&s->n_aborts, 1);
    if (!s->quiet) {
        fprintf(stderr, "stub: peer closed mid-response at %lld ns (CLOCK_MONOTONIC)\n",
                (long long)t);
    }
}

static void conn_close(struct stub_upstream *s, size_t idx)
{
    struct stub_conn *c = s->conns[idx];
    if (c->responding) {
        atomic_fetch_sub(&s->n_active, 1);
    }
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c->segs);
    free(c);
    s->conns[idx] = s->conns[--s->n_open];
}

static void set_last(struct stub_upstream *s, const char *body, size_t blen, const char *auth,
                     size_t alen)
{
    char *b = xrealloc(NULL, blen + 1);
    memcpy(b, body, blen);
    b[blen] = '\0';
    char *a = NULL;
    if (auth) {
        a = xrealloc(NULL, alen + 1);
        memcpy(a, auth, alen);
        a[alen] = '\0';
    }
    pthread_mutex_lock(&s->lock);
    free(s->last_body);
    free(s->last_auth);
    s->last_body = b;
    s->last_auth = a;
    pthread_mutex_unlock(&s->lock);
}

/* Finds header name's value in the header block [h, h+n); NULL if absent. */
static const char *find_header(const char *h, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = h + n;
    const char *line = memchr(h, '\n', n); /* skip the request line */
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) {
            break;
        }
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) {
                ve--;
            }
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol;
    }
    return NULL;
}

/* Parses one complete request from c->in if there is one and plans its response. */
static void conn_try_request(struct stub_upstream *s, size_t idx)
{
    struct stub_conn *c = s->conns[idx];
    if (c->responding || c->in.len == 0) {
        return;
    }
    char *hend = c->in.p ? strstr(c->in.p, "\r\n\r\n") : NULL;
    if (!hend) {
        return;
    }
    size_t hlen = (size_t)(hend - c->in.p) + 4;
    size_t vl = 0;
    const char *cl = find_header(c->in.p, hlen, "content-length", &vl);
    size_t blen = cl ? (size_t)strtoull(cl, NULL, 10) : 0;
    struct plan pl = {.c = c, .t_ns = now_ns()};
    if (blen > STUB_REQ_MAX) {
        c->in.len = 0; /* answer and hang up; the rest of the body is never read */
        c->out.len = 0;
        c->sent = 0;
        c->n_segs = 0;
        c->seg_idx = 0;
        c->after = AFTER_CLOSE;
        c->split = false;
        simple_response(&pl, 413, NULL, "{\"error\":{\"message\":\"stub: body too large\"}}");
        c->responding = true;
        atomic_fetch_add(&s->n_active, 1);
        atomic_fetch_add(&s->n_requests, 1);
        return;
    }
    if (c->in.len < hlen + blen) {
        size_t el = 0;
        const char *ex = find_header(c->in.p, hlen, "expect", &el);
        if (ex && !c->continued && el == 12 && strncasecmp(ex, "100-continue", 12) == 0) {
            c->continued = true; /* small and rare: a blocking-free best effort is enough */
            (void)!send(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
        }
        return;
    }
    c->continued = false;
    const char *body = c->in.p + hlen;
    c->out.len = 0;
    c->sent = 0;
    c->n_segs = 0;
    c->seg_idx = 0;
    c->after = AFTER_KEEP;
    c->split = false;
    const char *conn = find_header(c->in.p, hlen, "connection", &vl);
    if (conn && vl == 5 && strncasecmp(conn, "close", 5) == 0) {
        c->after = AFTER_CLOSE;
    }
    char method[8] = "";
    char path[256] = "";
    sscanf(c->in.p, "%7s %255s", method, path);
    size_t pl_len = strlen(path);
    if (strcmp(method, "POST") == 0 && pl_len >= 17 &&
        strcmp(path + pl_len - 17, "/chat/completions") == 0) {
        size_t al = 0;
        const char *auth = find_header(c->in.p, hlen, "authorization", &al);
        set_last(s, body, blen, auth, al);
        chat_response(s, &pl, body, blen);
    } else if (strcmp(method, "GET") == 0 && strcmp(path, "/stub/aborts") == 0) {
        char j[128];
        snprintf(j, sizeof(j), "{\"aborts\":%ld,\"last_abort_ns\":%lld}", atomic_load(&s->n_aborts),
                 (long long)atomic_load(&s->last_abort_ns));
        simple_response(&pl, 200, NULL, j);
    } else if (strcmp(method, "GET") == 0 && pl_len >= 7 &&
               strcmp(path + pl_len - 7, "/models") == 0) {
        simple_response(
            &pl, 200, NULL,
            "{\"object\":\"list\",\"data\":[{\"id\":\"stub-model\",\"object\":\"model\","
            "\"created\":1700000000,\"owned_by\":\"stub\"}]}");
    } else {
        simple_response(&pl, 404, NULL, "{\"error\":{\"message\":\"stub: no such path\"}}");
    }
    free(pl.pend.p);
    if (!s->quiet) {
        fprintf(stderr, "stub: %s %s (%zu bytes)\n", method, path, blen);
    }
    /* drop the request from the input */
    size_t used = hlen + blen;
    memmove(c->in.p, c->in.p + used, c->in.len - used);
    c->in.len -= used;
    c->in.p[c->in.len] = '\0';
    c->responding = true;
    atomic_fetch_add(&s->n_active, 1);
    atomic_fetch_add(&s->n_requests, 1);
}

/* Writes what is due. Returns false when the connection was closed (idx now holds another). */
static bool conn_write(struct stub_upstream *s, size_t idx)
{
    struct stub_conn *c = s->conns[idx];
    int64_t now = now_ns();
    while (c->responding && c->seg_idx < c->n_segs) {
        struct stub_seg *g = &c->segs[c->seg_idx];
        if (now < g->due_ns) {
            return true;
        }
        if (c->sent < g->end) {
            size_t want = c->split ? 1 : g->end - c->sent;
            ssize_t w = send(c->fd, c->out.p + c->sent, want, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    return true;
                }
                note_abort(s, c);
                conn_close(s, idx);
                return false;
            }
            c->sent += (size_t)w;
            if (c->split && c->sent < g->end) {
                return true; /* one byte per write, one write per loop turn */
            }
            continue;
        }
        c->seg_idx++;
    }
    if (!c->responding || c->seg_idx < c->n_segs) {
        return true;
    }
    /* the response is over */
    if (c->after == AFTER_HANG) {
        return true; /* keeps counting as active until the client goes */
    }
    c->responding = false;
    atomic_fetch_sub(&s->n_active, 1);
    if (c->after == AFTER_CLOSE) {
        c->responding = false;
        conn_close(s, idx);
        return false;
    }
    conn_try_request(s, idx); /* a pipelined next request */
    return true;
}

static void conn_read(struct stub_upstream *s, size_t idx)
{
    struct stub_conn *c = s->conns[idx];
    char tmp[16384];
    ssize_t r = recv(c->fd, tmp, sizeof(tmp), 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        note_abort(s, c);
        conn_close(s, idx);
        return;
    }
    if (r < 0) {
        return;
    }
    if (c->in.len + (size_t)r > STUB_REQ_MAX + 65536) {
        conn_close(s, idx);
        return;
    }
    buf_add(&c->in, tmp, (size_t)r);
    conn_try_request(s, idx);
}

static void *stub_main(void *arg)
{
    struct stub_upstream *s = arg;
    struct pollfd *pfd = xrealloc(NULL, (STUB_CONNS_MAX + 2) * sizeof(*pfd));
    while (!atomic_load(&s->stop)) {
        int64_t now = now_ns();
        int timeout = 1000;
        pfd[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        size_t n_open = s->n_open;
        for (size_t i = 0; i < n_open; i++) {
            struct stub_conn *c = s->conns[i];
            pfd[i + 2] = (struct pollfd){.fd = c->fd, .events = POLLIN};
            if (c->responding && c->seg_idx < c->n_segs) {
                int64_t due = c->segs[c->seg_idx].due_ns;
                if (due <= now) {
                    pfd[i + 2].events |= POLLOUT;
                } else {
                    int64_t ms = (due - now) / 1000000 + 1;
                    if (ms < timeout) {
                        timeout = (int)ms;
                    }
                }
            }
        }
        int rc = poll(pfd, n_open + 2, timeout);
        if (rc < 0 && errno != EINTR) {
            break;
        }
        if (rc <= 0) {
            continue;
        }
        /* connections first (indexes shift when one closes: walk backwards) */
        for (size_t i = n_open; i-- > 0;) {
            short re = pfd[i + 2].revents;
            if (re & (POLLOUT)) {
                if (!conn_write(s, i)) {
                    continue;
                }
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                conn_read(s, i);
            }
        }
        if (pfd[0].revents & POLLIN) {
            int fd = accept(s->lfd, NULL, NULL);
            if (fd >= 0 && s->n_open < STUB_CONNS_MAX) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                struct stub_conn *c = xrealloc(NULL, sizeof(*c));
                memset(c, 0, sizeof(*c));
                c->fd = fd;
                s->conns[s->n_open++] = c;
                atomic_fetch_add(&s->n_conns, 1);
            } else if (fd >= 0) {
                close(fd);
            }
        }
        if (pfd[1].revents & POLLIN) {
            char b[16];
            (void)!read(s->wake[0], b, sizeof(b));
        }
    }
    while (s->n_open > 0) {
        conn_close(s, s->n_open - 1);
    }
    free(pfd);
    return NULL;
}

struct stub_upstream *stub_upstream_start_on(const char *host, int port, bool quiet)
{
    struct stub_upstream *s = xrealloc(NULL, sizeof(*s));
    memset(s, 0, sizeof(*s));
    s->quiet = quiet;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) {
        free(s);
        return NULL;
    }
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host ? host : "127.0.0.1", &sa.sin_addr) != 1 ||
        bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s->lfd, 512) != 0) {
        close(s->lfd);
        free(s);
        return NULL;
    }
    socklen_t sl = sizeof(sa);
    getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
    s->port = ntohs(sa.sin_port);
    fcntl(s->lfd, F_SETFL, fcntl(s->lfd, F_GETFL) | O_NONBLOCK);
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        close(s->lfd);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->stop, false);
    atomic_init(&s->n_conns, 0);
    atomic_init(&s->n_requests, 0);
    atomic_init(&s->n_active, 0);
    atomic_init(&s->n_aborts, 0);
    atomic_init(&s->last_abort_ns, 0);
    if (pthread_create(&s->thread, NULL, stub_main, s) != 0) {
        close(s->lfd);
        close(s->wake[0]);
        close(s->wake[1]);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    return s;
}

struct stub_upstream *stub_upstream_start(void)
{
    return stub_upstream_start_on("127.0.0.1", 0, true);
}

int stub_upstream_port(const struct stub_upstream *s)
{
    return s->port;
}

void stub_upstream_stop(struct stub_upstream *s)
{
    if (!s) {
        return;
    }
    atomic_store(&s->stop, true);
    (void)!write(s->wake[1], "x", 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    for (int i = 0; i < STUB_FAIL_KEYS_MAX; i++) {
        free(s->fails[i].text);
    }
    free(s->last_body);
    free(s->last_auth);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

long stub_upstream_connections(struct stub_upstream *s)
{
    return atomic_load(&s->n_conns);
}

long stub_upstream_requests(struct stub_upstream *s)
{
    return atomic_load(&s->n_requests);
}

long stub_upstream_active(struct stub_upstream *s)
{
    return atomic_load(&s->n_active);
}

bool stub_upstream_wait_active(struct stub_upstream *s, long want, int timeout_ms)
{
    int64_t end = now_ns() + (int64_t)timeout_ms * 1000000;
    while (atomic_load(&s->n_active) != want) {
        if (now_ns() >= end) {
            return false;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

long stub_upstream_aborts(struct stub_upstream *s, int64_t *last_ns)
{
    long n = atomic_load(&s->n_aborts);
    if (last_ns) {
        *last_ns = atomic_load(&s->last_abort_ns);
    }
    return n;
}

bool stub_upstream_wait_aborts(struct stub_upstream *s, long want, int timeout_ms)
{
    int64_t end = now_ns() + (int64_t)timeout_ms * 1000000;
    while (atomic_load(&s->n_aborts) < want) {
        if (now_ns() >= end) {
            return false;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static char *copy_locked(struct stub_upstream *s, char **field)
{
    pthread_mutex_lock(&s->lock);
    char *r = NULL;
    if (*field) {
        size_t n = strlen(*field);
        r = xrealloc(NULL, n + 1);
        memcpy(r, *field, n + 1);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

char *stub_upstream_last_body(struct stub_upstream *s)
{
    return copy_locked(s, &s->last_body);
}

char *stub_upstream_last_auth(struct stub_upstream *s)
{
    return copy_locked(s, &s->last_auth);
}
