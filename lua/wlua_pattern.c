/* string.find, string.match, string.gmatch and string.gsub for the sandbox: Lua 5.4 pattern
 * semantics (Lua manual 6.4.1) with a step budget. Lua's own matcher backtracks in C, where
 * the count hook never fires, so `("a"):rep(1e5):find("a-a-a-a-b")` would ignore the time
 * limit and cancellation; here every 1000 matcher steps are charged to the run like 1000
 * instructions, and the limits fire as usual. Runs on the thread owning the state. */
#include <ctype.h>
#include <string.h>

#include "lua/wlua_internal.h"

#define WLUA_PAT_CAPS 32   /* captures per pattern (LUA_MAXCAPTURES) */
#define WLUA_PAT_DEPTH 200 /* matcher recursion (C stack) */
#define WLUA_CAP_OPEN (-1) /* capture still open */
#define WLUA_CAP_POS (-2)  /* position capture "()" */
#define WLUA_PAT_SPECIALS "^$*+?.([%-"

struct wlua_pm {
    lua_State *L;
    const char *s0; /* subject */
    const char *s_end;
    const char *p_end; /* pattern end */
    int n_caps;
    int depth_left;
    int steps_left; /* until the next budget charge */
    int step_period;
    struct {
        const char *at;
        ptrdiff_t len; /* or WLUA_CAP_OPEN / WLUA_CAP_POS */
    } cap[WLUA_PAT_CAPS];
};

static void wlua_pm_step(struct wlua_pm *pm)
{
    if (--pm->steps_left <= 0) {
        pm->steps_left = pm->step_period;
        wlua_budget_tick(pm->L);
    }
}

/* Returns the end of the single-character class starting at p. */
static const char *wlua_pm_class_end(struct wlua_pm *pm, const char *p)
{
    char c = *p++;
    if (c == '%') {
        if (p >= pm->p_end) {
            luaL_error(pm->L, "malformed pattern (ends with '%%')");
        }
        return p + 1;
    }
    if (c == '[') {
        if (p < pm->p_end && *p == '^') {
            p++;
        }
        /* The first character of a set is literal, even ']'. */
        do {
            if (p >= pm->p_end) {
                luaL_error(pm->L, "malformed pattern (missing ']')");
            }
            c = *p++;
            if (c == '%') {
                if (p >= pm->p_end) {
                    luaL_error(pm->L, "malformed pattern (missing ']')");
                }
                p++;
            }
        } while (p >= pm->p_end || *p != ']');
        return p + 1;
    }
    return p;
}

static int wlua_pm_class(int c, int cl)
{
    int r;
    switch (tolower(cl)) {
    case 'a':
        r = isalpha(c);
        break;
    case 'c':
        r = iscntrl(c);
        break;
    case 'd':
        r = isdigit(c);
        break;
    case 'g':
        r = isgraph(c);
        break;
    case 'l':
        r = islower(c);
        break;
    case 'p':
        r = ispunct(c);
        break;
    case 's':
        r = isspace(c);
        break;
    case 'u':
        r = isupper(c);
        break;
    case 'w':
        r = isalnum(c);
        break;
    case 'x':
        r = isxdigit(c);
        break;
    case 'z': /* deprecated in Lua 5.2 but still accepted by 5.4 */
        r = c == 0;
        break;
    default:
        return cl == c;
    }
    if (isupper(cl)) {
        r = !r;
    }
    return r != 0;
}

/* p at '[', ec at the closing ']'. */
static int wlua_pm_set(int c, const char *p, const char *ec)
{
    int neg = 0;
    p++;
    if (*p == '^') {
        neg = 1;
        p++;
    }
    for (; p < ec; p++) {
        if (*p == '%') {
            p++;
            if (wlua_pm_class(c, (unsigned char)*p)) {
                return !neg;
            }
        } else if (p + 2 < ec && p[1] == '-') {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) {
                return !neg;
            }
            p += 2;
        } else if ((unsigned char)*p == c) {
            return !neg;
        }
    }
    return neg;
}

static int wlua_pm_single(struct wlua_pm *pm, const char *s, const char *p, const char *ep)
{
    if (s >= pm->s_end) {
        return 0;
    }
    int c = (unsigned char)*s;
    switch (*p) {
    case '.':
        return 1;
    case '%':
        return wlua_pm_class(c, (unsigned char)p[1]);
    case '[':
        return wlua_pm_set(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

static const char *wlua_pm_match(struct wlua_pm *pm, const char *s, const char *p);

static const char *wlua_pm_max(struct wlua_pm *pm, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;
    while (wlua_pm_single(pm, s + i, p, ep)) {
        wlua_pm_step(pm);
        i++;
    }
    for (; i >= 0; i--) {
        wlua_pm_step(pm);
        const char *r = wlua_pm_match(pm, s + i, ep + 1);
        if (r) {
            return r;
        }
    }
    return NULL;
}

static const char *wlua_pm_min(struct wlua_pm *pm, const char *s, const char *p, const char *ep)
{
    for (;;) {
        wlua_pm_step(pm);
        const char *r = wlua_pm_match(pm, s, ep + 1);
        if (r) {
            return r;
        }
        if (!wlua_pm_single(pm, s, p, ep)) {
            return NULL;
        }
        s++;
    }
}

static const char *wlua_pm_open(struct wlua_pm *pm, const char *s, const char *p, ptrdiff_t what)
{
    if (pm->n_caps >= WLUA_PAT_CAPS) {
        luaL_error(pm->L, "too many captures");
    }
    pm->cap[pm->n_caps].at = s;
    pm->cap[pm->n_caps].len = what;
    pm->n_caps++;
    const char *r = wlua_pm_match(pm, s, p);
    if (!r) {
        pm->n_caps--;
    }
    return r;
}

static const char *wlua_pm_close(struct wlua_pm *pm, const char *s, const char *p)
{
    int l = pm->n_caps - 1;
    while (l >= 0 && pm->cap[l].len != WLUA_CAP_OPEN) {
        l--;
    }
    if (l < 0) {
        luaL_error(pm->L, "invalid pattern capture");
    }
    pm->cap[l].len = s - pm->cap[l].at;
    const char *r = wlua_pm_match(pm, s, p);
    if (!r) {
        pm->cap[l].len = WLUA_CAP_OPEN;
    }
    return r;
}

static const char *wlua_pm_balance(struct wlua_pm *pm, const char *s, const char *p)
{
    if (p + 1 >= pm->p_end) {
        luaL_error(pm->L, "malformed pattern (missing arguments to '%%b')");
    }
    if (s >= pm->s_end || *s != p[0]) {
        return NULL;
    }
    int depth = 1;
    while (++s < pm->s_end) {
        wlua_pm_step(pm);
        if (*s == p[1]) {
            if (--depth == 0) {
                return s + 1;
            }
        } else if (*s == p[0]) {
            depth++;
        }
    }
    return NULL;
}

static const char *wlua_pm_backref(struct wlua_pm *pm, const char *s, int d)
{
    int l = d - '1';
    if (l < 0 || l >= pm->n_caps || pm->cap[l].len == WLUA_CAP_OPEN) {
        luaL_error(pm->L, "invalid capture index %%%d", l + 1);
    }
    ptrdiff_t len = pm->cap[l].len;
    if (len >= 0 && pm->s_end - s >= len && memcmp(pm->cap[l].at, s, (size_t)len) == 0) {
        return s + len;
    }
    return NULL;
}

/* Matches p against s; returns the end of the match or NULL. */
static const char *wlua_pm_match(struct wlua_pm *pm, const char *s, const char *p)
{
    if (--pm->depth_left == 0) {
        luaL_error(pm->L, "pattern too complex");
    }
    const char *r = NULL;
    for (;;) {
        wlua_pm_step(pm);
        if (p >= pm->p_end) {
            r = s;
            break;
        }
        if (*p == '(') {
            if (p + 1 < pm->p_end && p[1] == ')') {
                r = wlua_pm_open(pm, s, p + 2, WLUA_CAP_POS);
            } else {
                r = wlua_pm_open(pm, s, p + 1, WLUA_CAP_OPEN);
            }
            break;
        }
        if (*p == ')') {
            r = wlua_pm_close(pm, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == pm->p_end) {
            r = s == pm->s_end ? s : NULL;
            break;
        }
        if (*p == '%' && p + 1 < pm->p_end && p[1] == 'b') {
            s = wlua_pm_balance(pm, s, p + 2);
            if (!s) {
                break;
            }
            p += 4;
            continue;
        }
        if (*p == '%' && p + 1 < pm->p_end && p[1] == 'f') {
            p += 2;
            if (p >= pm->p_end || *p != '[') {
                luaL_error(pm->L, "missing '[' after '%%f' in pattern");
            }
            const char *ep = wlua_pm_class_end(pm, p);
            int prev = s == pm->s0 ? 0 : (unsigned char)s[-1];
            int cur = s < pm->s_end ? (unsigned char)*s : 0;
            if (!wlua_pm_set(prev, p, ep - 1) && wlua_pm_set(cur, p, ep - 1)) {
                p = ep;
                continue;
            }
            break;
        }
        if (*p == '%' && p + 1 < pm->p_end && isdigit((unsigned char)p[1])) {
            s = wlua_pm_backref(pm, s, (unsigned char)p[1]);
            if (!s) {
                break;
            }
            p += 2;
            continue;
        }
        const char *ep = wlua_pm_class_end(pm, p);
        char q = ep < pm->p_end ? *ep : '\0';
        if (!wlua_pm_single(pm, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1; /* zero repetitions */
                continue;
            }
            break;
        }
        if (q == '?') {
            r = wlua_pm_match(pm, s + 1, ep + 1);
            if (r) {
                break;
            }
            p = ep + 1;
            continue;
        }
        if (q == '+') {
            r = wlua_pm_max(pm, s + 1, p, ep);
            break;
        }
        if (q == '*') {
            r = wlua_pm_max(pm, s, p, ep);
            break;
        }
        if (q == '-') {
            r = wlua_pm_min(pm, s, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    pm->depth_left++;
    return r;
}

static void wlua_pm_init(struct wlua_pm *pm, lua_State *L, const char *s, size_t ls, const char *p,
                         size_t lp)
{
    struct wlua_state *st = wlua_state_of(L);
    pm->L = L;
    pm->s0 = s;
    pm->s_end = s + ls;
    pm->p_end = p + lp;
    pm->step_period = st->lim.hook_every;
    pm->steps_left = pm->step_period;
}

static void wlua_pm_reset(struct wlua_pm *pm)
{
    pm->n_caps = 0;
    pm->depth_left = WLUA_PAT_DEPTH;
}

/* Pushes capture i (the whole match s..e if there are no captures and i == 0). */
static void wlua_pm_push_one(struct wlua_pm *pm, int i, const char *s, const char *e)
{
    if (i >= pm->n_caps) {
        if (i != 0) {
            luaL_error(pm->L, "invalid capture index %%%d", i + 1);
        }
        lua_pushlstring(pm->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = pm->cap[i].len;
    if (len == WLUA_CAP_OPEN) {
        luaL_error(pm->L, "unfinished capture");
    } else if (len == WLUA_CAP_POS) {
        lua_pushinteger(pm->L, (pm->cap[i].at - pm->s0) + 1);
    } else {
        lua_pushlstring(pm->L, pm->cap[i].at, (size_t)len);
    }
}

/* Pushes all captures (or the whole match when s is not NULL and there are none). */
static int wlua_pm_push_all(struct wlua_pm *pm, const char *s, const char *e)
{
    int n = pm->n_caps == 0 && s ? 1 : pm->n_caps;
    luaL_checkstack(pm->L, n, "too many captures");
    for (int i = 0; i < n; i++) {
        wlua_pm_push_one(pm, i, s, e);
    }
    return n;
}

/* Lua 5.4's rule for a starting position: 1-based, negative from the end, clamped at 1. */
static size_t wlua_pm_init_pos(lua_State *L, int arg, size_t len)
{
    lua_Integer pos = luaL_optinteger(L, arg, 1);
    if (pos > 0) {
        return (size_t)pos;
    }
    if (pos == 0 || pos < -(lua_Integer)len) {
        return 1;
    }
    return len + (size_t)pos + 1;
}

static int wlua_pm_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++) {
        if (p[i] != '\0' && strchr(WLUA_PAT_SPECIALS, p[i])) {
            return 1;
        }
    }
    return 0;
}

static int wlua_pm_find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = wlua_pm_init_pos(L, 3, ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !wlua_pm_specials(p, lp))) {
        const char *hit = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (hit) {
            lua_pushinteger(L, (hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)((hit - s) + (ptrdiff_t)lp));
            return 2;
        }
        luaL_pushfail(L);
        return 1;
    }
    struct wlua_pm pm;
    wlua_pm_init(&pm, L, s, ls, p, lp);
    int anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
    }
    const char *s1 = s + init;
    do {
        wlua_pm_reset(&pm);
        const char *e = wlua_pm_match(&pm, s1, p);
        if (e) {
            if (find) {
                lua_pushinteger(L, (s1 - s) + 1);
                lua_pushinteger(L, e - s);
                return wlua_pm_push_all(&pm, NULL, NULL) + 2;
            }
            return wlua_pm_push_all(&pm, s1, e);
        }
        wlua_pm_step(&pm);
    } while (s1++ < pm.s_end && !anchor);
    luaL_pushfail(L);
    return 1;
}

static int wlua_find(lua_State *L)
{
    return wlua_pm_find_aux(L, 1);
}

static int wlua_match(lua_State *L)
{
    return wlua_pm_find_aux(L, 0);
}

/* gmatch's iterator: upvalues subject, pattern, and a userdata {next offset, last match}. */
struct wlua_gm {
    size_t next;
    ptrdiff_t last; /* offset of the previous match's end, or -1 */
};

static int wlua_gmatch_next(lua_State *L)
{
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
    struct wlua_gm *gm = lua_touserdata(L, lua_upvalueindex(3));
    struct wlua_pm pm;
    wlua_pm_init(&pm, L, s, ls, p, lp);
    for (const char *src = s + gm->next; src <= pm.s_end; src++) {
        wlua_pm_reset(&pm);
        const char *e = wlua_pm_match(&pm, src, p);
        if (e && (gm->last < 0 || e != s + gm->last)) {
            gm->next = (size_t)(e - s);
            gm->last = e - s;
            return wlua_pm_push_all(&pm, src, e);
        }
        wlua_pm_step(&pm);
    }
    gm->next = ls + 1;
    return 0;
}

static int wlua_gmatch(lua_State *L)
{
    size_t ls;
    luaL_checklstring(L, 1, &ls);
    luaL_checkstring(L, 2);
    size_t init = wlua_pm_init_pos(L, 3, ls) - 1;
    lua_settop(L, 2);
    struct wlua_gm *gm = lua_newuserdatauv(L, sizeof(*gm), 0);
    gm->next = init > ls ? ls + 1 : init;
    gm->last = -1;
    lua_pushcclosure(L, wlua_gmatch_next, 3);
    return 1;
}

/* Appends the replacement for the match s..e (repl at index 3 of type tr) to b. */
static void wlua_gsub_add(struct wlua_pm *pm, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = pm->L;
    if (tr == LUA_TSTRING || tr == LUA_TNUMBER) {
        size_t lr;
        const char *r = lua_tolstring(L, 3, &lr);
        for (size_t i = 0; i < lr; i++) {
            if (r[i] != '%') {
                luaL_addchar(b, r[i]);
                continue;
            }
            i++;
            if (i < lr && r[i] == '%') {
                luaL_addchar(b, '%');
            } else if (i < lr && isdigit((unsigned char)r[i])) {
                if (r[i] == '0') {
                    luaL_addlstring(b, s, (size_t)(e - s));
                } else {
                    wlua_pm_push_one(pm, r[i] - '1', s, e);
                    luaL_tolstring(L, -1, NULL);
                    lua_remove(L, -2);
                    luaL_addvalue(b);
                }
            } else {
                luaL_error(L, "invalid use of '%%' in replacement string");
            }
        }
        return;
    }
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = wlua_pm_push_all(pm, s, e);
        lua_call(L, n, 1);
    } else {
        wlua_pm_push_one(pm, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s)); /* keep the original text */
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int wlua_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(
        L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
        "string/function/table");
    struct wlua_pm pm;
    wlua_pm_init(&pm, L, src, ls, p, lp);
    int anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *last = NULL;
    lua_Integer n = 0;
    while (n < max_n) {
        wlua_pm_reset(&pm);
        const char *e = wlua_pm_match(&pm, src, p);
        if (e && e != last) {
            n++;
            wlua_gsub_add(&pm, &b, src, e, tr);
            src = last = e;
        } else if (src < pm.s_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) {
            break;
        }
    }
    luaL_addlstring(&b, src, (size_t)(pm.s_end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void wlua_pattern_open(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"find", wlua_find}, {"match", wlua_match}, {"gmatch", wlua_gmatch},
        {"gsub", wlua_gsub}, {NULL, NULL},
    };
    t = lua_absindex(L, t);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, t, f->name);
    }
}
