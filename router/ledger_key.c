/* The ledger's HMAC key: from WYE_LEDGER_KEY (hex or text), else from "<ledger>.key", created
 * 0600 with random bytes when asked. Runs on the thread that opens the ledger (main, at
 * startup) or the CLI. The key is never logged, printed or put in an error message. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "conf/conf.h"
#include "common/log.h"
#include "router/ledger_internal.h"

#define KEY_HEX_MIN ((size_t)RT_LEDGER_KEY_MIN * 2)
#define KEY_HEX_MAX ((size_t)RT_LEDGER_KEY_MAX * 2)

static atomic_bool key_warned;

static bool all_hex(const char *s, size_t n)
{
    return strspn(s, "0123456789abcdefABCDEF") == n;
}

/* Reads "<hex>\n" from the key file at fd. */
static enum wye_err read_key_file(int fd, const char *name, uint8_t *key, size_t *key_len,
                                  char *errbuf, size_t errlen)
{
    char text[KEY_HEX_MAX + 8];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, text + got, sizeof(text) - 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            char eb[128];
            snprintf(errbuf, errlen, "cannot read the ledger key file %s: %s", name,
                     wye_strerror(errno, eb, sizeof(eb)));
            return WYE_ERR_IO;
        }
        if (r == 0 || got + (size_t)r == sizeof(text) - 1) {
            got += (size_t)r;
            break;
        }
        got += (size_t)r;
    }
    while (got > 0 && (text[got - 1] == '\n' || text[got - 1] == '\r' || text[got - 1] == ' ')) {
        got--;
    }
    text[got] = '\0';
    enum wye_err err = WYE_OK;
    if (got < KEY_HEX_MIN || got > KEY_HEX_MAX || got % 2 != 0 || !all_hex(text, got) ||
        !wye_hex_decode(text, key, got / 2)) {
        snprintf(errbuf, errlen,
                 "the ledger key file %s is malformed (expected %zu to %zu hex digits)", name,
                 KEY_HEX_MIN, KEY_HEX_MAX);
        err = WYE_ERR_PARSE;
    } else {
        *key_len = got / 2;
    }
    memset(text, 0, sizeof(text));
    struct stat st;
    if (!err && fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
        WYE_WARN("ledger: the key file %s is readable by others: chmod 600 it", name);
    }
    return err;
}

/* Writes a fresh random key to name (0600) via a temporary file and link(2), so a reader
 * never sees half a key. EXISTS-race: someone else's key wins and is read back. */
static enum wye_err create_key_file(const char *name, uint8_t *key, size_t *key_len, char *errbuf,
                                    size_t errlen)
{
    char eb[128];
    size_t tlen = strlen(name) + 32;
    char *tmp = wye_malloc(tlen);
    if (!tmp) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", name, (long)getpid());
    enum wye_err err = wye_random(key, RT_LEDGER_KEY_MIN);
    if (err) {
        snprintf(errbuf, errlen, "cannot generate a ledger key: %s", wye_err_str(err));
        goto out_tmp;
    }
    char hex[KEY_HEX_MIN + 2];
    wye_hex_encode(key, RT_LEDGER_KEY_MIN, hex);
    hex[KEY_HEX_MIN] = '\n';
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ledger_write_all(fd, hex, sizeof(hex) - 1) != WYE_OK || fsync(fd) != 0) {
        snprintf(errbuf, errlen, "cannot write the ledger key file %s: %s", tmp,
                 wye_strerror(errno, eb, sizeof(eb)));
        err = WYE_ERR_IO;
        if (fd >= 0) {
            close(fd);
            (void)unlink(tmp);
        }
        goto out_hex;
    }
    close(fd);
    if (link(tmp, name) != 0) {
        int e = errno;
        (void)unlink(tmp);
        if (e == EEXIST) {
            fd = open(name, O_RDONLY | O_CLOEXEC);
            err = fd < 0 ? WYE_ERR_IO : read_key_file(fd, name, key, key_len, errbuf, errlen);
            if (fd >= 0) {
                close(fd);
            } else {
                snprintf(errbuf, errlen, "cannot open the ledger key file %s: %s", name,
                         wye_strerror(errno, eb, sizeof(eb)));
            }
            goto out_hex;
        }
        snprintf(errbuf, errlen, "cannot create the ledger key file %s: %s", name,
                 wye_strerror(e, eb, sizeof(eb)));
        err = WYE_ERR_IO;
        goto out_hex;
    }
    (void)unlink(tmp);
    ledger_fsync_dir(name);
    *key_len = RT_LEDGER_KEY_MIN;
out_hex:
    memset(hex, 0, sizeof(hex));
out_tmp:
    wye_free(tmp);
    return err;
}

enum wye_err rt_ledger_key_from_env(const char *ledger_path, bool create, uint8_t *key,
                                    size_t *key_len, char *errbuf, size_t errlen)
{
    const char *env = getenv("WYE_LEDGER_KEY"); /* NOLINT(concurrency-mt-unsafe): startup */
    if (env && *env) {
        size_t n = strlen(env);
        wye_log_add_secret(env);
        if (n >= KEY_HEX_MIN && n <= KEY_HEX_MAX && n % 2 == 0 && all_hex(env, n)) {
            wye_hex_decode(env, key, n / 2);
            *key_len = n / 2;
            return WYE_OK;
        }
        if (n < RT_LEDGER_KEY_MIN || n > RT_LEDGER_KEY_MAX) {
            snprintf(errbuf, errlen,
                     "WYE_LEDGER_KEY must be %d to %d characters (or %zu+ hex digits); it has %zu",
                     RT_LEDGER_KEY_MIN, RT_LEDGER_KEY_MAX, KEY_HEX_MIN, n);
            return WYE_ERR_INVAL;
        }
        memcpy(key, env, n);
        *key_len = n;
        return WYE_OK;
    }
    char eb[128];
    size_t nlen = strlen(ledger_path) + 5;
    char *name = wye_malloc(nlen);
    if (!name) {
        snprintf(errbuf, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    snprintf(name, nlen, "%s.key", ledger_path);
    enum wye_err err;
    int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        err = read_key_file(fd, name, key, key_len, errbuf, errlen);
        close(fd);
    } else if (errno != ENOENT) {
        snprintf(errbuf, errlen, "cannot open the ledger key file %s: %s", name,
                 wye_strerror(errno, eb, sizeof(eb)));
        err = WYE_ERR_IO;
    } else if (!create) {
        snprintf(errbuf, errlen, "no ledger key: set WYE_LEDGER_KEY or provide %s", name);
        err = WYE_ERR_NOTFOUND;
    } else {
        err = create_key_file(name, key, key_len, errbuf, errlen);
    }
    if (!err && create && !atomic_exchange(&key_warned, true)) {
        WYE_WARN("ledger: WYE_LEDGER_KEY is not set; using the key in %s (back it up and keep "
                 "it secret: without it the ledger cannot be verified)",
                 name);
    }
    wye_free(name);
    return err;
}

enum wye_err rt_ledger_open_conf(const struct conf_config *cfg, const char *path,
                                 struct rt_ledger **out, char *errbuf, size_t errlen)
{
    uint8_t key[RT_LEDGER_KEY_MAX];
    size_t key_len = sizeof(key);
    *out = NULL;
    enum wye_err err = rt_ledger_key_from_env(path, true, key, &key_len, errbuf, errlen);
    if (err) {
        return err;
    }
    struct rt_ledger_opts o = {
        .path = path,
        .key = key,
        .key_len = key_len,
        .fsync = cfg->ledger.fsync == CONF_FSYNC_ALWAYS ? RT_LEDGER_FSYNC_EVERY
                 : cfg->ledger.fsync == CONF_FSYNC_NONE ? RT_LEDGER_FSYNC_NONE
                                                         : RT_LEDGER_FSYNC_INTERVAL,
        .fsync_interval_ms = cfg->ledger.fsync_interval_ms,
        .rotate_bytes = cfg->ledger.rotate_bytes,
        .rotate_daily = cfg->ledger.rotate_daily,
    };
    err = rt_ledger_open(&o, out, errbuf, errlen);
    for (volatile uint8_t *z = key; z < key + sizeof(key); z++) {
        *z = 0; /* the key stays only in the ledger's copy */
    }
    return err;
}
