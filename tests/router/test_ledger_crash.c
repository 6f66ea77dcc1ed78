/* Crash safety: a child process appends records in a loop and reports each record whose done
 * callback fired through a pipe; the parent SIGKILLs it at a random moment, reopens the ledger
 * (which cuts any torn line) and checks that the chain verifies and that every reported record
 * is present. A few bounded iterations on one ledger, so the chain spans several crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "router/ledger.h"
#include "tests/router/test_ledger_util.h"

#define ITERATIONS 5
#define CHILD_MAX_RECORDS 200000

static int report_fd = -1;

static void child_done(void *arg, enum wye_err status)
{
    if (status == WYE_OK) {
        uint32_t i = (uint32_t)(uintptr_t)arg;
        (void)!write(report_fd, &i, sizeof(i));
    }
}

/* The child: append "crash<iter>_<i>" records as fast as the queue takes them. */
static _Noreturn void child_main(const char *path, int iter, int fd)
{
    report_fd = fd;
    struct rt_ledger *l = tl_open(path, NULL);
    if (!l) {
        _exit(3);
    }
    char id[64];
    for (uint32_t i = 0; i < CHILD_MAX_RECORDS; i++) {
        struct rt_ledger_rec r = tl_rec((int)i);
        snprintf(id, sizeof(id), "crash%d_%u", iter, i);
        r.request_id = id;
        while (rt_ledger_append(l, &r, child_done, (void *)(uintptr_t)i) == WYE_ERR_AGAIN) {
            wye_sleep_ms(1);
        }
    }
    rt_ledger_close(l);
    _exit(0);
}

static void test_kill9(void **state)
{
    (void)state;
    char dir[512], path[600];
    tl_tmpdir(dir, sizeof(dir), "crash");
    snprintf(path, sizeof(path), "%s/ledger.jsonl", dir);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    uint32_t *seen = malloc(CHILD_MAX_RECORDS * sizeof(uint32_t));
    assert_non_null(seen);
    uint64_t total_reported = 0;
    for (int iter = 0; iter < ITERATIONS; iter++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_main(path, iter, p[1]);
        }
        close(p[1]);
        /* Once the first acknowledgement arrives (at most 5 s), let it write for another
         * 0-100 ms, then kill it mid-flight. */
        int64_t deadline = wye_now_ns() + 5000 * WYE_NS_PER_MS;
        bool armed = false;
        size_t n_seen = 0;
        uint8_t partial[4];
        size_t have = 0;
        bool killed = false;
        for (;;) {
            int64_t left = (deadline - wye_now_ns()) / WYE_NS_PER_MS;
            if (!killed && left <= 0) {
                kill(pid, SIGKILL);
                killed = true;
            }
            struct pollfd pfd = {.fd = p[0], .events = POLLIN};
            int rc = poll(&pfd, 1, killed ? 2000 : (int)(left > 0 ? left : 0));
            if (rc == 0) {
                if (killed) {
                    break;
                }
                continue;
            }
            ssize_t r = read(p[0], partial + have, sizeof(partial) - have);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                break; /* EOF: the child is gone */
            }
            have += (size_t)r;
            if (!armed) {
                armed = true;
                deadline = wye_now_ns() + (rand() % 100) * WYE_NS_PER_MS;
            }
            if (have == sizeof(partial) && n_seen < CHILD_MAX_RECORDS) {
                memcpy(&seen[n_seen++], partial, sizeof(partial));
                have = 0;
            }
        }
        close(p[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        total_reported += n_seen;
        assert_true(n_seen > 0); /* the child did write before it was killed */

        /* Reopen (recovery) and close, then verify the whole chain. */
        struct rt_ledger *l = tl_open(path, NULL);
        assert_non_null(l);
        rt_ledger_close(l);
        const char *files[] = {path};
        struct wye_buf rep;
        uint64_t nr = 0;
        enum wye_err err = tl_verify(files, 1, NULL, 0, &rep, &nr);
        if (err) {
            fprintf(stderr, "%s", rep.data);
        }
        assert_int_equal(err, WYE_OK);
        wye_buf_cleanup(&rep);

        /* Acknowledgements come in append order; the last acknowledged record and at least
         * as many of this child's records as were acknowledged are in the file (the chain
         * verified, so none is missing in between). */
        for (size_t k = 0; k < n_seen; k++) {
            assert_int_equal(seen[k], k);
        }
        char *text = tl_read(path, NULL);
        assert_non_null(text);
        char id[80];
        int idlen = snprintf(id, sizeof(id), "\"request_id\":\"crash%d_", iter);
        size_t count = 0;
        for (const char *q = text; (q = strstr(q, id)) != NULL; q += idlen) {
            count++;
        }
        assert_true(count >= n_seen);
        if (n_seen > 0) {
            snprintf(id, sizeof(id), "\"request_id\":\"crash%d_%u\"", iter, seen[n_seen - 1]);
            assert_non_null(strstr(text, id));
        }
        free(text);
    }
    /* The test must have exercised something. */
    assert_true(total_reported > 0);
    free(seen);
    if (getenv("TL_CRASH_KEEP")) {
        fprintf(stderr, "kept %s (%llu acknowledged)\n", dir, (unsigned long long)total_reported);
        return;
    }
    tl_rmdir(dir);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    assert_int_equal(wye_crypto_init(), WYE_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
