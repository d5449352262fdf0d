/*
 * SMS encodings: which characters GSM-7 carries (3GPP TS 23.038, the GSM 03.38 default alphabet
 * and its extension table), how many segments a text takes, and the rewriting that keeps a text
 * in GSM-7 where that keeps it correct.
 *
 * Why it matters: one character outside GSM-7 makes the whole message UCS-2, which carries 70
 * characters per segment instead of 160 (67 instead of 153 when concatenated), and every segment
 * is billed.
 */
#include <string.h>

#include "message/internal.h"

/* ---- UTF-8 ---- */

uint32_t th_msg_utf8_next(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *s = *p;
    uint32_t c = s[0], min;
    size_t n;
    if (c < 0x80) {
        *p = s + 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0) {
        n = 2, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, c &= 0x07, min = 0x10000;
    } else {
        *p = s + 1;
        return 0xFFFD;
    }
    if ((size_t)(end - s) < n) {
        *p = s + 1;
        return 0xFFFD;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *p = s + 1;
            return 0xFFFD;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        *p = s + 1;
        return 0xFFFD;
    }
    *p = s + n;
    return c;
}

/* ---- the GSM 03.38 tables ---- */

/*
 * The default alphabet's characters outside printable ASCII, in table order (0x00 £ ... 0x7F à):
 * £ ¥ è é ù ì ò Ç Ø ø Å å Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ Æ æ ß É ¤ ¡ Ä Ö Ñ Ü § ¿ ä ö ñ ü à. 0x09 is the
 * capital Ç, as Unicode's mapping (GSM0338.TXT) has it, though the first edition printed a small
 * one.
 */
static const uint16_t gsm_basic_extra[] = {
    0x00A3, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2, 0x00C7, 0x00D8, 0x00F8,
    0x00C5, 0x00E5, 0x0394, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8, 0x03A3,
    0x0398, 0x039E, 0x00C6, 0x00E6, 0x00DF, 0x00C9, 0x00A4, 0x00A1, 0x00C4, 0x00D6,
    0x00D1, 0x00DC, 0x00A7, 0x00BF, 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0,
};

int th_msg_gsm_septets(uint32_t cp)
{
    if (cp == '\n' || cp == '\r')
        return 1;
    if (cp == '\f' || cp == 0x20AC) /* the extension table: escape + code */
        return 2;
    if (cp >= 0x20 && cp < 0x7F) {
        if (cp == '`')
            return 0;
        if (strchr("^{}\\[~]|", (int)cp))
            return 2;
        return 1;
    }
    if (cp < 0xA0 || cp > 0x3A9)
        return 0;
    for (size_t i = 0; i < sizeof gsm_basic_extra / sizeof gsm_basic_extra[0]; i++)
        if (gsm_basic_extra[i] == cp)
            return 1;
    return 0;
}

const char *th_sms_charset_name(th_sms_charset cs)
{
    return cs == TH_CHARSET_UCS2 ? "UCS-2" : "GSM-7";
}

const char *th_sms_encoding_name(th_sms_encoding e)
{
    return e == TH_SMS_GSM7 ? "gsm7" : e == TH_SMS_UCS2 ? "ucs2" : "auto";
}

/* ---- measuring ---- */

static int unit_weight(uint32_t cp, bool gsm)
{
    return gsm ? th_msg_gsm_septets(cp) : cp > 0xFFFF ? 2 : 1;
}

void th_sms_measure(const char *text, size_t len, struct th_sms_info *out)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    size_t chars = 0, septets = 0, units = 0;
    bool gsm = true;
    while (p < end) {
        uint32_t cp = th_msg_utf8_next(&p, end);
        int s = th_msg_gsm_septets(cp);
        if (s == 0)
            gsm = false;
        septets += (size_t)s;
        units += cp > 0xFFFF ? 2 : 1;
        chars++;
    }
    out->charset = gsm ? TH_CHARSET_GSM7 : TH_CHARSET_UCS2;
    out->chars = chars;
    out->units = gsm ? septets : units;
    size_t single = gsm ? TH_SMS_GSM7_SINGLE : TH_SMS_UCS2_SINGLE;
    size_t part = gsm ? TH_SMS_GSM7_PART : TH_SMS_UCS2_PART;
    if (out->units <= single) {
        out->segments = 1;
        return;
    }
    /* Concatenated: fill each part; a two-unit character that does not fit starts the next. */
    int parts = 1;
    size_t used = 0;
    for (p = (const unsigned char *)text; p < end;) {
        size_t w = (size_t)unit_weight(th_msg_utf8_next(&p, end), gsm);
        if (used + w > part) {
            parts++;
            used = w;
        } else {
            used += w;
        }
    }
    out->segments = parts;
}

/* ---- rewriting toward GSM-7 ---- */

/* Typographic punctuation and spaces with a GSM-7 equivalent that says the same. */
static const char *punctuation(uint32_t c)
{
    switch (c) {
    case 0x2018: /* ‘ */
    case 0x2019: /* ’ */
    case 0x201A: /* ‚ */
    case 0x201B: /* ‛ */
    case 0x2032: /* ′ */
    case 0x00B4: /* ´ */
    case 0x02BC: /* ʼ */
        return "'";
    case 0x201C: /* “ */
    case 0x201D: /* ” */
    case 0x201E: /* „ */
    case 0x201F: /* ‟ */
    case 0x2033: /* ″ */
    case 0x00AB: /* « */
    case 0x00BB: /* » */
        return "\"";
    case 0x2010: /* hyphens and dashes */
    case 0x2011:
    case 0x2012:
    case 0x2013:
    case 0x2014:
    case 0x2015:
    case 0x2212: /* minus */
        return "-";
    case 0x2026: /* … */
        return "...";
    case 0x00A0: /* no-break and typographic spaces */
    case 0x2002:
    case 0x2003:
    case 0x2004:
    case 0x2005:
    case 0x2006:
    case 0x2007:
    case 0x2008:
    case 0x2009:
    case 0x200A:
    case 0x202F:
        return " ";
    case 0x00AD: /* soft hyphen, zero-width characters, BOM: invisible */
    case 0x200B:
    case 0x200C:
    case 0x200D:
    case 0x2060:
    case 0xFEFF:
        return "";
    }
    return NULL;
}

/* Latin-1 Supplement U+00C0..U+00FF: the base letter of each; "" where GSM-7 has the letter. */
static const char *const latin1[64] = {
    "A", "A", "A", "A", "",  "",  "", "",  "E", "",  "E", "E", "I", "I", "I",  "I",
    "D", "",  "O", "O", "O", "O", "", "x", "",  "U", "U", "U", "",  "Y", "TH", "",
    "",  "a", "a", "a", "",  "",  "", "c", "",  "",  "e", "e", "",  "i", "i",  "i",
    "d", "",  "",  "o", "o", "o", "", "",  "",  "",  "u", "u", "",  "y", "th", "y",
};

/* Latin Extended-A U+0100..U+017F, in pairs (capital, small) where the block has them. */
static const char *const latin_ext_a[128] = {
    "A", "a", "A",  "a",  "A", "a", "C", "c", "C", "c",  "C", "c", "C", "c", "D", "d", /* 0100 */
    "D", "d", "E",  "e",  "E", "e", "E", "e", "E", "e",  "E", "e", "G", "g", "G", "g", /* 0110 */
    "G", "g", "G",  "g",  "H", "h", "H", "h", "I", "i",  "I", "i", "I", "i", "I", "i", /* 0120 */
    "I", "i", "IJ", "ij", "J", "j", "K", "k", "k", "L",  "l", "L", "l", "L", "l", "L", /* 0130 */
    "l", "L", "l",  "N",  "n", "N", "n", "N", "n", "'n", "N", "n", "O", "o", "O", "o", /* 0140 */
    "O", "o", "OE", "oe", "R", "r", "R", "r", "R", "r",  "S", "s", "S", "s", "S", "s", /* 0150 */
    "S", "s", "T",  "t",  "T", "t", "T", "t", "U", "u",  "U", "u", "U", "u", "U", "u", /* 0160 */
    "U", "u", "U",  "u",  "W", "w", "Y", "y", "Y", "Z",  "z", "Z", "z", "Z", "z", "s", /* 0170 */
};

/* A Latin letter without a GSM-7 form: its letters without diacritics (gsm7 policy only). */
static const char *latin_letter(uint32_t c)
{
    if (c >= 0xC0 && c <= 0xFF)
        return latin1[c - 0xC0][0] ? latin1[c - 0xC0] : NULL;
    if (c >= 0x100 && c <= 0x17F)
        return latin_ext_a[c - 0x100];
    switch (c) {
    case 0x01A0: /* Ơ ơ Ư ư (Vietnamese) */
        return "O";
    case 0x01A1:
        return "o";
    case 0x01AF:
        return "U";
    case 0x01B0:
        return "u";
    case 0x0218: /* Ș ș Ț ț (Romanian, comma below) */
        return "S";
    case 0x0219:
        return "s";
    case 0x021A:
        return "T";
    case 0x021B:
        return "t";
    }
    /* Vietnamese letters with tone marks, U+1EA0..U+1EF9: capital at even, small at odd */
    static const struct {
        uint32_t from, to;
        char base;
    } viet[] = {{0x1EA0, 0x1EB7, 'a'}, {0x1EB8, 0x1EC7, 'e'}, {0x1EC8, 0x1ECB, 'i'},
                {0x1ECC, 0x1EE3, 'o'}, {0x1EE4, 0x1EF1, 'u'}, {0x1EF2, 0x1EF9, 'y'}};
    static const char *const small[] = {"a", "e", "i", "o", "u", "y"};
    static const char *const capital[] = {"A", "E", "I", "O", "U", "Y"};
    for (size_t i = 0; i < sizeof viet / sizeof viet[0]; i++)
        if (c >= viet[i].from && c <= viet[i].to)
            return c % 2 ? small[i] : capital[i];
    if (c >= 0x0300 && c <= 0x036F) /* combining diacritics (text in NFD) */
        return "";
    return NULL;
}

/* What c becomes under enc (NULL: it stays, and so does the text). */
static const char *rewrite_of(th_sms_encoding enc, uint32_t c)
{
    const char *r = punctuation(c);
    if (!r && enc == TH_SMS_GSM7)
        r = latin_letter(c);
    return r;
}

bool th_msg_sms_rewritable(th_sms_encoding enc, const char *text, size_t len)
{
    if (enc == TH_SMS_UCS2)
        return false;
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    while (p < end) {
        uint32_t c = th_msg_utf8_next(&p, end);
        if (!th_msg_gsm_septets(c) && !rewrite_of(enc, c))
            return false;
    }
    return true;
}

th_err th_sms_prepare(th_sms_encoding enc, const char *text, size_t len, struct th_buf *out,
                      bool *rewritten)
{
    *rewritten = false;
    struct th_sms_info info;
    th_sms_measure(text, len, &info);
    if (enc == TH_SMS_UCS2 || info.charset == TH_CHARSET_GSM7)
        return th_buf_append(out, text, len);
    size_t start = out->len;
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    bool whole = true;
    while (p < end && th_buf_err(out) == TH_E_OK) {
        const unsigned char *from = p;
        uint32_t c = th_msg_utf8_next(&p, end);
        if (th_msg_gsm_septets(c)) {
            th_buf_append(out, from, (size_t)(p - from));
            continue;
        }
        const char *r = rewrite_of(enc, c);
        if (!r) { /* a character of another script: the text stays as written */
            whole = false;
            break;
        }
        th_buf_appends(out, r);
    }
    th_err e = th_buf_err(out);
    if (e == TH_E_OK && whole) {
        *rewritten = true;
        return TH_E_OK;
    }
    th_buf_truncate(out, start); /* a failed out is empty already and stays failed */
    return e != TH_E_OK ? e : th_buf_append(out, text, len);
}
