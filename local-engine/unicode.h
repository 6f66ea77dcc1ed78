/* Unicode helpers for the tokenizers: UTF-8 decoding/encoding and the code point properties
 * the pre-tokenizer regexes use (\p{L}, \p{N}, \p{P}, \s). Pure functions; any thread. */
#ifndef WYE_ENGINE_UNICODE_H
#define WYE_ENGINE_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* General-category classes (the first letter of the Unicode category). */
enum eng_uc_class {
    ENG_UC_UNDEFINED = 0, /* unassigned (Cn) */
    ENG_UC_LETTER = 1,    /* L* */
    ENG_UC_NUMBER = 2,    /* N* */
    ENG_UC_SEPARATOR = 3, /* Z* */
    ENG_UC_MARK = 4,      /* M* */
    ENG_UC_PUNCT = 5,     /* P* */
    ENG_UC_SYMBOL = 6,    /* S* */
    ENG_UC_CONTROL = 7    /* Cc, Cf, Cs, Co */
};

/* Returned by eng_utf8_decode for a byte that does not start a valid sequence. */
#define ENG_UC_INVALID 0xFFFFFFFFu

/* The class of code point cp (UNDEFINED above U+10FFFF or for ENG_UC_INVALID). */
enum eng_uc_class eng_uc_class(uint32_t cp);
/* The Unicode White_Space property (regex \s). */
bool eng_uc_is_space(uint32_t cp);
/* Decodes one character at s (n > 0 bytes available): stores the code point in *cp and
 * returns its length. An invalid, overlong, surrogate or truncated sequence yields
 * *cp = ENG_UC_INVALID and length 1. */
size_t eng_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Encodes cp (<= U+10FFFF) into out (4 bytes of room); returns the length (0 if invalid). */
size_t eng_utf8_encode(uint32_t cp, char *out);
/* The length of the longest prefix of s[0..n) that does not end inside an incomplete but
 * still possibly valid UTF-8 sequence (invalid bytes count as complete). */
size_t eng_utf8_complete_prefix(const char *s, size_t n);
/* Whether s[0..n) is well-formed UTF-8 throughout (eng_utf8_decode finds no invalid byte). */
bool eng_utf8_valid(const char *s, size_t n);

#endif
