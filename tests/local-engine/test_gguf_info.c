/* `wye info`: the text and JSON reports of real models, --help, and a clean exit code 1 with
 * the loader's message on a bad file. eng_cli_info runs in a forked child with stdout and
 * stderr sent to files; the built wye binary is also driven through popen when present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "local-engine/eng_cli.h"
#include "tests/local-engine/test_gguf_util.h"

struct run {
    int rc;
    char out[16384];
    char err[4096];
};

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs eng_cli_info(argv) in a child process. */
static void run_info(struct run *r, int argc, const char *const *args)
{
    char out_path[] = "/tmp/wye_info_out_XXXXXX";
    char err_path[] = "/tmp/wye_info_err_XXXXXX";
    int fo = mkstemp(out_path);
    int fe = mkstemp(err_path);
    assert_true(fo >= 0 && fe >= 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        char *argv[8] = {NULL};
        for (int i = 0; i < argc && i < 7; i++) {
            argv[i] = strdup(args[i]);
        }
        int rc = eng_cli_info(argc, argv);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    r->rc = WEXITSTATUS(status);
    close(fo);
    close(fe);
    slurp(out_path, r->out, sizeof r->out);
    slurp(err_path, r->err, sizeof r->err);
    unlink(out_path);
    unlink(err_path);
}

static void test_text(void **state)
{
    (void)state;
    static struct run r;
    const char *argv[] = {"info", WYE_SHARED_DIR "/models/stories260K-q8_0.gguf", NULL};
    run_info(&r, 2, argv);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "architecture:   llama"));
    assert_non_null(strstr(r.out, "name:           stories260K"));
    assert_non_null(strstr(r.out, "embedding_length                       64\n"));
    assert_non_null(strstr(r.out, "block_count                            5\n"));
    assert_non_null(strstr(r.out, "attention.head_count_kv                4\n"));
    assert_non_null(strstr(r.out, "context_length                         512\n"));
    assert_non_null(strstr(r.out, "tokenizer:      llama, 512 tokens with scores"));
    assert_non_null(strstr(r.out, "bos 1 '<s>', eos 2 '</s>'"));
    assert_non_null(strstr(r.out, "tensors:        48,"));
    assert_non_null(strstr(r.out, "F32 x16"));
    assert_non_null(strstr(r.out, "Q8_0 x32"));
    assert_non_null(strstr(r.out, "gguf version:   3"));
    assert_string_equal(r.err, "");
}

static void test_json(void **state)
{
    (void)state;
    static struct run r;
    const char *argv[] = {"info", "--json", WYE_SHARED_DIR "/vocab/ggml-vocab-qwen2.gguf", NULL};
    run_info(&r, 3, argv);
    assert_int_equal(r.rc, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "architecture")->valuestring, "qwen2");
    assert_int_equal(cJSON_GetObjectItem(j, "gguf_version")->valueint, 3);
    cJSON *tok = cJSON_GetObjectItem(j, "tokenizer");
    assert_non_null(tok);
    assert_int_equal(cJSON_GetObjectItem(tok, "n_tokens")->valuedouble, 151936);
    assert_string_equal(cJSON_GetObjectItem(tok, "model")->valuestring, "gpt2");
    assert_string_equal(cJSON_GetObjectItem(tok, "pre")->valuestring, "qwen2");
    cJSON *sp = cJSON_GetObjectItem(tok, "special");
    assert_int_equal(cJSON_GetObjectItem(sp, "eos")->valueint, 151645);
    /* The full template, not only its first lines. */
    const char *tmpl = cJSON_GetObjectItem(j, "chat_template")->valuestring;
    assert_non_null(strstr(tmpl, "<|im_start|>assistant"));
    assert_true(strlen(tmpl) > 2000);
    cJSON_Delete(j);

    const char *argv2[] = {"info", WYE_SHARED_DIR "/models/stories260K-f32.gguf", "--json", NULL};
    run_info(&r, 3, argv2);
    assert_int_equal(r.rc, 0);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    cJSON *hp = cJSON_GetObjectItem(j, "hparams");
    assert_int_equal(cJSON_GetObjectItem(hp, "embedding_length")->valueint, 64);
    assert_int_equal(cJSON_GetObjectItem(hp, "attention.head_count")->valueint, 8);
    assert_true(cJSON_GetObjectItem(hp, "attention.layer_norm_rms_epsilon")->valuedouble == 1e-5);
    cJSON *f32 = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tensor_types"), "F32");
    assert_int_equal(cJSON_GetObjectItem(f32, "count")->valueint, 48);
    cJSON_Delete(j);
}

static void test_errors(void **state)
{
    (void)state;
    static struct run r;
    const char *argv[] = {"info", WYE_SHARED_DIR "/models/README.md", NULL};
    run_info(&r, 2, argv);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "wye info: "));
    assert_non_null(strstr(r.err, "README.md: bad magic"));

    /* A malformed file written by the test helpers: the loader's message comes through. */
    const struct gguf_bad_case *c = NULL;
    for (size_t i = 0; i < gguf_n_bad_cases; i++) {
        if (strcmp(gguf_bad_cases[i].name, "block_size") == 0) {
            c = &gguf_bad_cases[i];
        }
    }
    assert_non_null(c);
    size_t len;
    uint8_t *buf = c->build(&len);
    assert_non_null(buf);
    char path[] = "/tmp/wye_info_bad_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
    wye_free(buf);
    const char *argv2[] = {"info", path, NULL};
    run_info(&r, 2, argv2);
    unlink(path);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, c->expect));

    const char *argv3[] = {"info", "--help", NULL};
    run_info(&r, 2, argv3);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "usage: wye info MODEL.gguf [--json]"));
    const char *argv4[] = {"info", NULL};
    run_info(&r, 1, argv4);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "usage:"));
    const char *argv5[] = {"info", "--bogus", "x.gguf", NULL};
    run_info(&r, 3, argv5);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unknown option '--bogus'"));
}

/* The real binary, when it has been built: `wye info` is wired into the command table. */
static void test_binary(void **state)
{
    (void)state;
    const char *bin = WYE_BINARY_DIR "/wye";
    if (access(bin, X_OK) != 0) {
        skip();
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s info %s/models/llama-2-tiny-random.gguf 2>&1", bin,
             WYE_SHARED_DIR);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_non_null(strstr(out, "32000 tokens"));
    assert_non_null(strstr(out, "F16 x9"));
    snprintf(cmd, sizeof cmd, "%s info /nonexistent.gguf 2>&1", bin);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    status = pclose(p);
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_non_null(strstr(out, "/nonexistent.gguf: cannot open"));
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_binary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
