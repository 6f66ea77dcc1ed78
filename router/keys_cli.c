/* `wye keys new NAME [options]` (main thread): makes a fresh random API key, prints it once on
 * stdout followed by the config entry to paste into keys = { ... } (which holds only the
 * key's SHA-256). The key itself is never written anywhere else. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "router/keys.h"

#define KEY_PREFIX "wye_"
#define KEY_CHARS 43 /* base62: 43 * log2(62) = 256 bits */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: wye keys new NAME [--rpm N] [--budget-day USD] [--budget-month USD]\n"
            "                         [--routes local,remote] [--over-budget local|refuse]\n\n"
            "Creates a random API key and prints it ONCE on the first line of stdout, then the\n"
            "entry to add to keys = { ... } in the config. Only the key's SHA-256 goes into the\n"
            "config; store the key itself now: wye does not keep it.\n\n"
            "  NAME                  the key's name (A-Z a-z 0-9 _ . - @, at most 64)\n"
            "  --rpm N               requests per minute, 0..1000000 (0: unlimited)\n"
            "  --budget-day USD      remote spend allowed per UTC day (absent: unlimited)\n"
            "  --budget-month USD    remote spend allowed per UTC month (absent: unlimited)\n"
            "  --routes LIST         allowed routes: local, remote or local,remote (default)\n"
            "  --over-budget WHAT    past a budget: local (answer locally) or refuse\n"
            "  -h, --help            this text\n");
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-' || c == '@')) {
            return false;
        }
    }
    return true;
}

static bool parse_usd(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v <= 1e9)) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_routes(const char *s, unsigned *out)
{
    unsigned bits = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 5 && strncmp(s, "local", 5) == 0) {
            bits |= CONF_ROUTE_LOCAL;
        } else if (n == 6 && strncmp(s, "remote", 6) == 0) {
            bits |= CONF_ROUTE_REMOTE;
        } else {
            return false;
        }
        s += n;
        if (*s == ',') {
            s++;
        }
    }
    *out = bits;
    return bits != 0;
}

/* Fills out with KEY_PREFIX + KEY_CHARS base62 characters (rejection sampling: no bias). */
static enum wye_err make_key(char *out, size_t outlen)
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t n = strlen(KEY_PREFIX);
    if (outlen < n + KEY_CHARS + 1) {
        return WYE_ERR_TOOBIG;
    }
    memcpy(out, KEY_PREFIX, n);
    while (n < strlen(KEY_PREFIX) + KEY_CHARS) {
        uint8_t raw[64];
        enum wye_err err = wye_random(raw, sizeof(raw));
        if (err) {
            return err;
        }
        for (size_t i = 0; i < sizeof(raw) && n < strlen(KEY_PREFIX) + KEY_CHARS; i++) {
            if (raw[i] < 248) { /* 248 = 4 * 62 */
                out[n++] = digits[raw[i] % 62];
            }
        }
        explicit_bzero(raw, sizeof(raw));
    }
    out[n] = '\0';
    return WYE_OK;
}

static int cmd_new(int argc, char **argv)
{
    const char *name = NULL;
    long rpm = -1;
    double day = -1, month = -1;
    unsigned routes = CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE;
    const char *over = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = strcmp(a, "--rpm") == 0 || strcmp(a, "--budget-day") == 0 ||
                     strcmp(a, "--budget-month") == 0 || strcmp(a, "--routes") == 0 ||
                     strcmp(a, "--over-budget") == 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (takes && !v) {
            fprintf(stderr, "wye keys new: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--rpm") == 0) {
            char *end;
            errno = 0;
            rpm = strtol(v, &end, 10);
            if (errno || end == v || *end || rpm < 0 || rpm > 1000000) {
                fprintf(stderr, "wye keys new: --rpm: expected an integer 0..1000000\n");
                return 2;
            }
        } else if (strcmp(a, "--budget-day") == 0 || strcmp(a, "--budget-month") == 0) {
            if (!parse_usd(v, a[9] == 'd' ? &day : &month)) {
                fprintf(stderr, "wye keys new: %s: expected a number of USD 0..1e9\n", a);
                return 2;
            }
        } else if (strcmp(a, "--routes") == 0) {
            if (!parse_routes(v, &routes)) {
                fprintf(stderr, "wye keys new: --routes: expected local, remote or local,remote\n");
                return 2;
            }
        } else if (strcmp(a, "--over-budget") == 0) {
            if (strcmp(v, "local") != 0 && strcmp(v, "refuse") != 0) {
                fprintf(stderr, "wye keys new: --over-budget: expected local or refuse\n");
                return 2;
            }
            over = v;
        } else if (a[0] == '-') {
            fprintf(stderr, "wye keys new: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (name) {
            fprintf(stderr, "wye keys new: only one NAME may be given\n");
            return 2;
        } else {
            name = a;
        }
        if (takes) {
            i++;
        }
    }
    if (!name) {
        fprintf(stderr, "wye keys new: NAME is required\n\n");
        usage(stderr);
        return 2;
    }
    if (!name_ok(name)) {
        fprintf(stderr,
                "wye keys new: NAME: expected 1 to 64 characters from A-Z a-z 0-9 _ . - @\n");
        return 2;
    }
    if (over && strcmp(over, "local") == 0 && !(routes & CONF_ROUTE_LOCAL)) {
        fprintf(stderr, "wye keys new: --over-budget local needs local in --routes\n");
        return 2;
    }
    char key[sizeof(KEY_PREFIX) + KEY_CHARS + 1];
    if (make_key(key, sizeof(key)) != WYE_OK) {
        fprintf(stderr, "wye keys new: cannot get random bytes\n");
        return 1;
    }
    uint8_t h[WYE_SHA256_LEN];
    char hex[2 * WYE_SHA256_LEN + 1];
    wye_sha256(key, strlen(key), h);
    wye_hex_encode(h, sizeof(h), hex);
    printf("%s\n", key);
    explicit_bzero(key, sizeof(key));
    printf("-- add to keys = { ... } in the config (the key above is shown only once):\n");
    printf("{ name = \"%s\", sha256 = \"%s\"", name, hex);
    if (rpm >= 0) {
        printf(", rpm = %ld", rpm);
    }
    if (day >= 0) {
        printf(", budget_usd_day = %.17g", day);
    }
    if (month >= 0) {
        printf(", budget_usd_month = %.17g", month);
    }
    printf(", routes = { %s%s%s }", routes & CONF_ROUTE_LOCAL ? "\"local\"" : "",
           routes == (CONF_ROUTE_LOCAL | CONF_ROUTE_REMOTE) ? ", " : "",
           routes & CONF_ROUTE_REMOTE ? "\"remote\"" : "");
    if (over) {
        printf(", over_budget = \"%s\"", over);
    }
    printf(" },\n");
    fflush(stdout);
    return 0;
}

int rt_cli_keys(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "new") == 0) {
        return cmd_new(argc - 1, argv + 1);
    }
    fprintf(stderr, "wye keys: unknown subcommand '%s' (expected: new)\n\n", argv[1]);
    usage(stderr);
    return 2;
}
