/* The engine's subcommands of the wye binary, one declaration each; gateway/main.c lists
 * them in its command table. Each takes main-style arguments (argv[0] is the command's name)
 * and returns the process exit code. Run on the main thread. */
#ifndef WYE_ENGINE_ENG_CLI_H
#define WYE_ENGINE_ENG_CLI_H

#include <stdbool.h>

/* wye info MODEL [--json]: a GGUF model's architecture, shapes, types, tokenizer, template. */
int eng_cli_info(int argc, char **argv);
/* wye run -m MODEL -p PROMPT [...]: generates a continuation (or a chat answer) to stdout. */
int eng_cli_run(int argc, char **argv);
/* wye tokenize -m MODEL [--no-bos] TEXT: prints the token ids as a JSON array. */
int eng_cli_tokenize(int argc, char **argv);
/* wye bench -m MODEL [-t N] [-p 128] [-n 64] [-r 3] [--json]: prompt/generation speed. */
int eng_cli_bench(int argc, char **argv);
/* wye mkmodel --shape S --type T -o OUT.gguf: writes a random-weight model of a known shape. */
int eng_cli_mkmodel(int argc, char **argv);

/* For the subcommands' numeric options: s is a whole base-10 integer in [lo, hi] (then stored
 * in *out). */
bool eng_cli_parse_long(const char *s, long lo, long hi, long *out);

#endif
