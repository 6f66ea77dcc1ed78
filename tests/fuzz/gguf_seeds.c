/* Writes the seed corpus for fuzz_gguf into a directory: the small valid file from the
 * loader's tests, every malformed case of the test table, and a file with one key of every
 * value type. Usage: gguf_seeds DIR. Single-threaded tool; nothing is committed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "local-engine/gguf_write.h"
#include "tests/local-engine/test_gguf_util.h"

static int write_seed(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "gguf_seeds: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static uint8_t *every_type(size_t *len)
{
    static const char *const strs[] = {"<s>", "", "hello world"};
    static const int32_t ints[] = {-1, 0, 1};
    static const uint16_t f16[32] = {0x3c00};
    int64_t ne[2] = {32, 1};
    struct eng_gguf_writer *w = eng_gguf_writer_create();
    void *buf = NULL;
    if (w && !eng_gguf_writer_add_u8(w, "a.u8", 1) && !eng_gguf_writer_add_i8(w, "a.i8", -1) &&
        !eng_gguf_writer_add_u16(w, "a.u16", 2) && !eng_gguf_writer_add_i16(w, "a.i16", -2) &&
        !eng_gguf_writer_add_u32(w, "a.u32", 3) && !eng_gguf_writer_add_i32(w, "a.i32", -3) &&
        !eng_gguf_writer_add_u64(w, "a.u64", 4) && !eng_gguf_writer_add_i64(w, "a.i64", -4) &&
        !eng_gguf_writer_add_f32(w, "a.f32", 0.5f) && !eng_gguf_writer_add_f64(w, "a.f64", 0.25) &&
        !eng_gguf_writer_add_bool(w, "a.bool", true) && !eng_gguf_writer_add_str(w, "a.s", "x") &&
        !eng_gguf_writer_add_arr_str(w, "a.as", strs, 3) &&
        !eng_gguf_writer_add_arr_data(w, "a.ai", ENG_GGUF_I32, ints, 3) &&
        !eng_gguf_writer_set_alignment(w, 64) &&
        !eng_gguf_writer_add_tensor(w, "t", ENG_TYPE_F16, 2, ne, f16, 64, ENG_GGUF_BORROW)) {
        if (eng_gguf_writer_write_mem(w, &buf, len) != WYE_OK) {
            buf = NULL;
        }
    }
    eng_gguf_writer_destroy(w);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gguf_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gguf_seeds: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc = 0;
    size_t len;
    uint8_t *buf = gguf_test_small(&len);
    rc |= !buf || write_seed(dir, "small", buf, len);
    wye_free(buf);
    buf = every_type(&len);
    rc |= !buf || write_seed(dir, "every_type", buf, len);
    wye_free(buf);
    for (size_t i = 0; i < gguf_n_bad_cases; i++) {
        buf = gguf_bad_cases[i].build(&len);
        rc |= !buf || write_seed(dir, gguf_bad_cases[i].name, buf, len);
        wye_free(buf);
    }
    if (rc == 0) {
        printf("wrote %zu seeds to %s\n", gguf_n_bad_cases + 2, dir);
    }
    return rc;
}
