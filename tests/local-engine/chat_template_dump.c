/* Test helper for chat_template_jinja_test.py: reads one JSON request from stdin and prints
 * eng_chat_format's output (raw bytes) for it:
 *   {"family": "qwen2", "bos": "<s>" | null, "add_generation_prompt": true,
 *    "messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}]}
 * or, with {"detect": "<template text>"}, prints "<family> <known 0|1>". Exit status 1 on
 * bad input, naming the problem on stderr. Single-threaded. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/chat.h"
#include "local-engine/chat_template.h"

#define IN_MAX (1 << 20)

static int fail(const char *msg)
{
    fprintf(stderr, "chat_template_dump: %s\n", msg);
    return 1;
}

int main(void)
{
    static char in[IN_MAX + 1];
    size_t n = fread(in, 1, IN_MAX, stdin);
    in[n] = '\0';
    cJSON *root = cJSON_ParseWithLength(in, n);
    if (root == NULL) {
        return fail("input is not JSON");
    }
    int rc = 1;
    struct wye_chat_msg *msgs = NULL;
    struct wye_buf out;
    wye_buf_init(&out, 1 << 24);
    const cJSON *det = cJSON_GetObjectItemCaseSensitive(root, "detect");
    if (cJSON_IsString(det)) {
        bool known;
        enum eng_chat_family f =
            eng_chat_detect(det->valuestring, strlen(det->valuestring), &known);
        printf("%s %d\n", eng_chat_family_name(f), known ? 1 : 0);
        rc = 0;
        goto done;
    }
    const cJSON *fam = cJSON_GetObjectItemCaseSensitive(root, "family");
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(root, "add_generation_prompt");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsString(fam) || !cJSON_IsArray(arr)) {
        rc = fail("need \"family\" (string) and \"messages\" (array)");
        goto done;
    }
    int f = 0;
    while (f < ENG_CHAT__COUNT &&
           strcmp(eng_chat_family_name((enum eng_chat_family)f), fam->valuestring) != 0) {
        f++;
    }
    if (f == ENG_CHAT__COUNT) {
        rc = fail("unknown family");
        goto done;
    }
    int n_msgs = cJSON_GetArraySize(arr);
    msgs = calloc((size_t)n_msgs + 1, sizeof(*msgs));
    if (msgs == NULL) {
        rc = fail("out of memory");
        goto done;
    }
    for (int i = 0; i < n_msgs; i++) {
        const cJSON *m = cJSON_GetArrayItem(arr, i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
            rc = fail("each message needs string role and content");
            goto done;
        }
        static const char *const roles[] = {"system", "user", "assistant", "tool"};
        int r = 0;
        while (r < 4 && strcmp(roles[r], role->valuestring) != 0) {
            r++;
        }
        if (r == 4) {
            rc = fail("unknown role");
            goto done;
        }
        msgs[i].role = (enum wye_role)r;
        msgs[i].content = content->valuestring;
    }
    enum wye_err err =
        eng_chat_format((enum eng_chat_family)f, msgs, (size_t)n_msgs, cJSON_IsTrue(gen),
                        cJSON_IsString(bos) ? bos->valuestring : NULL, &out);
    if (err) {
        rc = fail(wye_err_str(err));
        goto done;
    }
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    rc = 0;
done:
    wye_buf_cleanup(&out);
    free(msgs);
    cJSON_Delete(root);
    return rc;
}
