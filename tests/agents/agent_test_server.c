/* The scripted test server (see agent_test_server.h). Threads: the accept thread and one
 * thread per connection; counters are atomics. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/agents/agent_test_server.h"

struct ats {
    int fd, port;
    pthread_t thread;
    atomic_bool stop;
    atomic_long chats, slow_started, slow_aborted, live;
    atomic_llong chat_busy_ns;
    pthread_mutex_t last_lock;
    char *last_body; /* last_lock: the last chat request's body */
};

struct conn {
    struct ats *s;
    int fd;
};

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void sse(int fd, cJSON *chunk)
{
    char *s = cJSON_PrintUnformatted(chunk);
    cJSON_Delete(chunk);
    char head[] = "data: ";
    send_all(fd, head, strlen(head));
    send_all(fd, s, strlen(s));
    send_all(fd, "\n\n", 2);
    free(s);
}

static cJSON *chunk_with(cJSON *delta, const char *finish)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", "chatcmpl-ats");
    cJSON_AddStringToObject(c, "object", "chat.completion.chunk");
    cJSON_AddStringToObject(c, "model", "scripted");
    cJSON *ch = cJSON_AddArrayToObject(c, "choices");
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "index", 0);
    cJSON_AddItemToObject(x, "delta", delta ? delta : cJSON_CreateObject());
    if (finish) {
        cJSON_AddStringToObject(x, "finish_reason", finish);
    } else {
        cJSON_AddNullToObject(x, "finish_reason");
    }
    cJSON_AddItemToArray(ch, x);
    return c;
}

static void text_delta(int fd, const char *t)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "content", t);
    sse(fd, chunk_with(d, NULL));
}

/* Streams a tool call at index idx for tool name with args (split in two deltas). */
static void tool_call(int fd, int idx, const char *name, const char *args)
{
    char id[32];
    snprintf(id, sizeof(id), "call_ats_%d", idx);
    cJSON *d = cJSON_CreateObject();
    cJSON *tc = cJSON_AddArrayToObject(d, "tool_calls");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", idx);
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "type", "function");
    cJSON *f = cJSON_AddObjectToObject(c, "function");
    cJSON_AddStringToObject(f, "name", name);
    cJSON_AddStringToObject(f, "arguments", "");
    cJSON_AddItemToArray(tc, c);
    sse(fd, chunk_with(d, NULL));
    size_t half = strlen(args) / 2;
    for (int k = 0; k < 2; k++) {
        char part[512];
        snprintf(part, sizeof(part), "%.*s", k == 0 ? (int)half : (int)(strlen(args) - half),
                 args + (k == 0 ? 0 : half));
        d = cJSON_CreateObject();
        tc = cJSON_AddArrayToObject(d, "tool_calls");
        c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", idx);
        f = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(f, "arguments", part);
        cJSON_AddItemToArray(tc, c);
        sse(fd, chunk_with(d, NULL));
    }
}

static const char *content_of(const cJSON *m)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    return cJSON_IsString(c) ? c->valuestring : "";
}

/* A JSON object for a response_format schema: each property of an object schema gets the enum
 * value named in text (case-insensitive), else "hard" when text says "API" and the enum has
 * it, else the enum's first value; strings "x", numbers 1, booleans true. malloc'd. */
static char *schema_answer(const cJSON *schema, const char *text)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(schema, "properties"))
    {
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(p, "enum");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        const char *type = cJSON_IsString(ty) ? ty->valuestring : "";
        if (cJSON_GetArraySize(en) > 0) {
            const cJSON *pick = cJSON_GetArrayItem(en, 0), *e;
            bool named = false;
            cJSON_ArrayForEach(e, en)
            {
                if (!named && cJSON_IsString(e) && strcasestr(text, e->valuestring)) {
                    pick = e;
                    named = true;
                } else if (!named && cJSON_IsString(e) && strcmp(e->valuestring, "hard") == 0 &&
                           strstr(text, "API")) {
                    pick = e;
                }
            }
            cJSON_AddItemToObject(o, p->string, cJSON_Duplicate(pick, true));
        } else if (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0) {
            cJSON_AddNumberToObject(o, p->string, 1);
        } else if (strcmp(type, "boolean") == 0) {
            cJSON_AddTrueToObject(o, p->string);
        } else {
            cJSON_AddStringToObject(o, p->string, "x");
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void chat(struct ats *s, int fd, const char *body)
{
    atomic_fetch_add(&s->chats, 1);
    pthread_mutex_lock(&s->last_lock);
    free(s->last_body);
    s->last_body = strdup(body);
    pthread_mutex_unlock(&s->last_lock);
    cJSON *req = cJSON_Parse(body);
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(req, "response_format"),
                                         "json_schema"),
        "schema");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    int n = cJSON_GetArraySize(msgs);
    const cJSON *last = cJSON_GetArrayItem(msgs, n - 1);
    const char *sys = "", *first_user = "", *last_user = "";
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        if (strcmp(role, "system") == 0) {
            sys = content_of(m);
        } else if (strcmp(role, "user") == 0) {
            if (!first_user[0]) {
                first_user = content_of(m);
            }
            last_user = content_of(m);
        }
    }
    const char *hdr = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Connection: close\r\n\r\n";
    send_all(fd, hdr, strlen(hdr));
    const char *last_role = cJSON_GetObjectItemCaseSensitive(last, "role")->valuestring;
    bool loop = strstr(first_user, "#loop") != NULL;
    const char *finish = "stop";
    if (cJSON_GetArraySize(tools) > 0 && (loop || strcmp(last_role, "tool") != 0)) {
        const cJSON *f0 =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(f0, "name")->valuestring;
        char args[128] = "{}";
        const char *d = last_user;
        while (*d && (*d < '0' || *d > '9')) {
            d++;
        }
        if (*d) {
            int len = (int)strspn(d, "0123456789");
            snprintf(args, sizeof(args), "{\"order_id\":\"%.*s\"}", len, d);
        }
        tool_call(fd, 0, name, args);
        if (strstr(first_user, "#two")) {
            tool_call(fd, 1, name, args);
        }
        finish = "tool_calls";
    } else if (strcmp(last_role, "tool") == 0) {
        text_delta(fd, "Answer: ");
        text_delta(fd, content_of(last));
    } else if (cJSON_IsObject(schema)) {
        char *t = schema_answer(schema, last_user);
        text_delta(fd, t ? t : "{}");
        free(t);
    } else if (strstr(sys, "easy or hard")) {
        text_delta(fd, strstr(last_user, "API") ? "hard" : "easy");
    } else {
        char t[80];
        snprintf(t, sizeof(t), "Reply: %.60s", last_user);
        text_delta(fd, t);
    }
    sse(fd, chunk_with(NULL, finish));
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "id", "chatcmpl-ats");
    cJSON_AddStringToObject(u, "object", "chat.completion.chunk");
    cJSON_AddStringToObject(u, "model", "scripted");
    cJSON_AddArrayToObject(u, "choices");
    cJSON *us = cJSON_AddObjectToObject(u, "usage");
    cJSON_AddNumberToObject(us, "prompt_tokens", 1000);
    cJSON_AddNumberToObject(us, "completion_tokens", 100);
    cJSON_AddNumberToObject(us, "total_tokens", 1100);
    sse(fd, u);
    send_all(fd, "data: [DONE]\n\n", 14);
    cJSON_Delete(req);
}

static void slow(struct ats *s, int fd)
{
    atomic_fetch_add(&s->slow_started, 1);
    for (int i = 0; i < 200 && !atomic_load(&s->stop); i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            char b[64];
            if (recv(fd, b, sizeof(b), 0) <= 0) {
                atomic_fetch_add(&s->slow_aborted, 1);
                return;
            }
        }
    }
    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate";
    send_all(fd, r, strlen(r));
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    char *buf = malloc(1 << 20);
    size_t len = 0;
    char *body = NULL;
    size_t clen = 0;
    while (buf && len < (1 << 20) - 1) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0) {
            break;
        }
        ssize_t r = recv(c->fd, buf + len, (1 << 20) - 1 - len, 0);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
        buf[len] = '\0';
        char *eoh = strstr(buf, "\r\n\r\n");
        if (eoh) {
            char *cl = strcasestr(buf, "content-length:");
            clen = cl && cl < eoh ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
            if (len >= (size_t)(eoh + 4 - buf) + clen) {
                body = eoh + 4;
                break;
            }
        }
    }
    if (body) {
        if (strncmp(buf, "POST ", 5) == 0 && strstr(buf, "/chat/completions")) {
            body[clen] = '\0';
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            chat(c->s, c->fd, body);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            atomic_fetch_add(&c->s->chat_busy_ns,
                             (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                 (t1.tv_nsec - t0.tv_nsec));
        } else if (strncmp(buf, "GET /page ", 10) == 0) {
            const char *page = "<html><head><title>Wye</title><style>p{}</style></head><body>"
                               "<h1>Wye test page</h1><p>The quick brown fox jumps.</p>"
                               "</body></html>";
            char h[160];
            snprintf(h, sizeof(h),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     strlen(page));
            send_all(c->fd, h, strlen(h));
            send_all(c->fd, page, strlen(page));
        } else if (strncmp(buf, "GET /slow ", 10) == 0) {
            slow(c->s, c->fd);
        } else if (strncmp(buf, "GET /big ", 9) == 0) {
            size_t n = 2u << 20;
            char h[160];
            snprintf(h, sizeof(h),
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     n);
            send_all(c->fd, h, strlen(h));
            char x[4096];
            memset(x, 'x', sizeof(x));
            for (size_t i = 0; i < n; i += sizeof(x)) {
                send_all(c->fd, x, sizeof(x));
            }
        } else {
            const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: "
                            "close\r\n\r\n";
            send_all(c->fd, r, strlen(r));
        }
    }
    free(buf);
    close(c->fd);
    atomic_fetch_sub(&c->s->live, 1);
    free(c);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct ats *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        struct conn *c = malloc(sizeof(*c));
        pthread_t t;
        if (!c) {
            close(fd);
            continue;
        }
        c->s = s;
        c->fd = fd;
        atomic_fetch_add(&s->live, 1);
        if (pthread_create(&t, NULL, conn_main, c) != 0) {
            atomic_fetch_sub(&s->live, 1);
            close(fd);
            free(c);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

struct ats *ats_start(void)
{
    struct ats *s = calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->fd, 64) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0) {
        if (s->fd >= 0) {
            close(s->fd);
        }
        free(s);
        return NULL;
    }
    s->port = ntohs(a.sin_port);
    pthread_mutex_init(&s->last_lock, NULL);
    if (pthread_create(&s->thread, NULL, accept_main, s) != 0) {
        close(s->fd);
        free(s);
        return NULL;
    }
    return s;
}

int ats_port(const struct ats *s)
{
    return s->port;
}

long ats_chat_requests(struct ats *s)
{
    return atomic_load(&s->chats);
}

char *ats_last_chat_body(struct ats *s)
{
    pthread_mutex_lock(&s->last_lock);
    char *b = s->last_body ? strdup(s->last_body) : NULL;
    pthread_mutex_unlock(&s->last_lock);
    return b;
}

long long ats_chat_busy_ns(struct ats *s)
{
    return atomic_load(&s->chat_busy_ns);
}

long ats_slow_started(struct ats *s)
{
    return atomic_load(&s->slow_started);
}

long ats_slow_aborted(struct ats *s)
{
    return atomic_load(&s->slow_aborted);
}

void ats_stop(struct ats *s)
{
    if (!s) {
        return;
    }
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < 400 && atomic_load(&s->live) > 0; i++) {
        struct timespec ts = {0, 25 * 1000000L};
        nanosleep(&ts, NULL);
    }
    close(s->fd);
    free(s->last_body);
    pthread_mutex_destroy(&s->last_lock);
    free(s);
}
