/* The default local model of `wye serve` (the built binary, a child process, with no config
 * file and no model named), observed through GET /v1/models and the startup log: the first
 * regular *.gguf in ./models/ of the working directory, in name order (a directory named
 * *.gguf and other files are skipped); with none, ../shared/models/stories260K-q8_0.gguf beside
 * the working directory; with neither, the test model beside the source tree the binary was
 * built from. WYE_MODEL and --model win over ./models/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/gateway/http_client.h"
#include "tests/gateway/test_gateway_wiring_util.h"

static char g_dir[512];

static int setup(void **state)
{
    (void)state;
    ww_tmpdir(g_dir, sizeof(g_dir), "gw_wiring_model");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ww_rmdir(g_dir);
    return 0;
}

static void mkdir_ok(const char *path)
{
    if (mkdir(path, 0700) != 0) {
        fail_msg("mkdir %s failed", path);
    }
}

/* A symlink at link to the shared model file name. */
static void link_model(const char *name, const char *link)
{
    char target[700];
    snprintf(target, sizeof(target), "%s/models/%s", WYE_SHARED_DIR, name);
    if (symlink(target, link) != 0) {
        fail_msg("symlink %s -> %s failed", link, target);
    }
}

/* Starts `wye serve --listen 127.0.0.1:0 [extra]` in cwd with env, reads GET /v1/models into
 * models and the log into log (malloc'd), stops it cleanly. */
static void serve_models(const char *cwd, const char *const *env, const char *extra_opt,
                         const char *extra_val, char *models, size_t models_len, char **log)
{
    char logpath[700];
    snprintf(logpath, sizeof(logpath), "%s/serve.log", cwd);
    const char *args[] = {"--listen", "127.0.0.1:0", extra_opt, extra_val, NULL};
    struct ww_serve s;
    memset(&s, 0, sizeof(s));
    ww_serve_start(&s, cwd, logpath, env, args);
    struct hc_resp r;
    hc_resp_init(&r);
    int st = hc_request(s.port, "GET", "/v1/models", NULL, NULL, &r, WW_T_MS);
    snprintf(models, models_len, "%s", r.body.data ? r.body.data : "");
    hc_resp_cleanup(&r);
    int ws = ww_serve_stop(&s, SIGTERM);
    *log = ww_read_file(logpath);
    if (st != 200) {
        fail_msg("GET /v1/models: %d; log:\n%s", st, *log);
    }
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

static void expect(const char *models, const char *log, const char *model_id, const char *why)
{
    char id[128];
    snprintf(id, sizeof(id), "\"id\":\"%s\"", model_id);
    if (!strstr(models, id) || !strstr(models, "\"id\":\"auto\"")) {
        fail_msg("/v1/models does not list %s: %s", model_id, models);
    }
    if (!strstr(log, why)) {
        fail_msg("the log does not say '%s':\n%s", why, log);
    }
}

/* ./models/ in the working directory: its first regular *.gguf by name */
static void test_models_dir_first(void **state)
{
    (void)state;
    char work[600], models[700], p[800];
    snprintf(work, sizeof(work), "%s/a", g_dir);
    mkdir_ok(work);
    snprintf(models, sizeof(models), "%s/models", work);
    mkdir_ok(models);
    snprintf(p, sizeof(p), "%s/0-not-a-file.gguf", models); /* a directory: skipped */
    mkdir_ok(p);
    snprintf(p, sizeof(p), "%s/README.txt", models);
    ww_write_file(p, "not a model\n");
    snprintf(p, sizeof(p), "%s/mini-b.gguf", models);
    link_model("stories260K-q8_0.gguf", p);
    snprintf(p, sizeof(p), "%s/mini-a.gguf", models);
    link_model("stories260K-q4_0.gguf", p);
    char list[4096];
    char *log = NULL;
    serve_models(work, NULL, NULL, NULL, list, sizeof(list), &log);
    expect(list, log, "mini-a", "local model models/mini-a.gguf (the first *.gguf in ./models/)");
    assert_null(strstr(list, "mini-b"));
    assert_null(strstr(list, "0-not-a-file"));
    free(log);

    /* WYE_MODEL, then --model, win over ./models/ */
    char envv[800];
    snprintf(envv, sizeof(envv), "WYE_MODEL=%s/models/stories260K-f32.gguf", WYE_SHARED_DIR);
    const char *env[] = {envv, NULL};
    serve_models(work, env, NULL, NULL, list, sizeof(list), &log);
    expect(list, log, "stories260K-f32", "(from WYE_MODEL)");
    assert_null(strstr(list, "mini-a"));
    free(log);
    snprintf(p, sizeof(p), "%s/models/stories260K-q4_0.gguf", WYE_SHARED_DIR);
    serve_models(work, NULL, "--model", p, list, sizeof(list), &log);
    expect(list, log, "stories260K-q4_0", "(from --model)");
    assert_null(strstr(list, "mini-a"));
    free(log);
}

/* no *.gguf in ./models/: ../shared/models/stories260K-q8_0.gguf beside the working directory */
static void test_shared_beside_cwd(void **state)
{
    (void)state;
    char root[600], work[700], p[900];
    snprintf(root, sizeof(root), "%s/b", g_dir);
    mkdir_ok(root);
    snprintf(work, sizeof(work), "%s/work", root);
    mkdir_ok(work);
    snprintf(p, sizeof(p), "%s/models", work); /* empty: nothing to pick */
    mkdir_ok(p);
    snprintf(p, sizeof(p), "%s/shared", root);
    mkdir_ok(p);
    snprintf(p, sizeof(p), "%s/shared/models", root);
    mkdir_ok(p);
    snprintf(p, sizeof(p), "%s/shared/models/stories260K-q8_0.gguf", root);
    link_model("stories260K-q8_0.gguf", p);
    char list[4096];
    char *log = NULL;
    serve_models(work, NULL, NULL, NULL, list, sizeof(list), &log);
    expect(list, log, "stories260K-q8_0",
           "local model ../shared/models/stories260K-q8_0.gguf (the test model beside the "
           "working directory)");
    free(log);
}

/* neither: the test model beside the source tree of the binary's build directory */
static void test_shared_beside_source(void **state)
{
    (void)state;
    char work[600];
    snprintf(work, sizeof(work), "%s/c", g_dir);
    mkdir_ok(work);
    char list[4096];
    char *log = NULL;
    serve_models(work, NULL, NULL, NULL, list, sizeof(list), &log);
    expect(list, log, "stories260K-q8_0", "(the test model beside the source tree)");
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_dir_first),
        cmocka_unit_test(test_shared_beside_cwd),
        cmocka_unit_test(test_shared_beside_source),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
