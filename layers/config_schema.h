// INI configurations read through a schema: one table of keys (section, key, type, default, range,
// help) drives parsing, validation of each value, `--set section.key=value` overrides, the resolved
// text (a run dir's config.ini, checkpoint metadata, `--print-config`) and the Markdown reference.
// The model's keys (layers/config_model.h) and the training keys (train/config.h) are two schemas;
// dod-train composes them into one, dod-eval reads the model's part of a training configuration.
//
// Line numbers: iniparser does not report them, so after it has parsed the file a small second
// scan of the raw text records, for every `[section]` header and every `key = ...` line inside a
// section, the line it is on (lower-cased as iniparser does). Every error then reads
//     FILE:LINE: [section] key: what is wrong
// (an override reads "--set section.key=value: [section] key: what is wrong"; a missing required
// key names the line of its section header, or only FILE when the section is absent).
//
// INI dialect (iniparser 4.1): `[section]`, `key = value`, whole-line comments starting with ; or #,
// inline comments after an unquoted value (`crop = 256 ; pixels`), values may be "double quoted"
// (needed for a value containing ; or #). Keys and sections are case-insensitive.
//
// The reader (layers/config_schema.c) is compiled only when iniparser is found (files named
// config*.c, see CMakeLists.txt); the types here are plain data, usable everywhere.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CFG_STR 1024        // capacity of string and list values
#define CFG_ERR_LEN 8192    // error buffers: every problem found, one line each
#define CFG_MAX_FIELDS 128  // keys of one (composed) schema
#define CFG_ORIGIN_LEN 320
#define CFG_MAX_SECTIONS 16
#define CFG_NAME_LEN 64     // section and key names

// How a value is stored at CfgField.off in the configuration struct:
//   CFG_INT long long, CFG_FLOAT double, CFG_BOOL bool, CFG_STRING / CFG_LIST char[CFG_STR],
//   CFG_ENUM an int-sized enum (the index of the value in `choices`).
typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING, CFG_ENUM, CFG_LIST } CfgType;

typedef struct {
    const char *section, *key;
    CfgType type;
    const char *def;          // default as INI text; NULL: required (string/list keys only)
    double min, max;          // int/float: inclusive range
    const char *choices;      // enum: "a|b|c"
    size_t off;               // offset of the value in the configuration struct
    bool resume_free;         // may differ from the checkpoint's value on --resume
    const char *help;
    const char *range_error;  // float: message for a value out of range, "%s" = the value (NULL: the range)
} CfgField;

typedef struct {
    const CfgField *fields;
    int n_fields;
    const char *const *sections;   // in the order of the resolved text and the reference
    int n_sections;
    // Sections [0, n_owned) belong to this schema: an unknown key there is an error. When n_owned <
    // n_sections the schema reads part of a larger file (dod-eval reading a training configuration):
    // sections it does not list, and unknown keys of sections [n_owned, n_sections), are skipped.
    int n_owned;
} CfgSchema;

// Where the values of one configuration came from, for error messages.
typedef struct {
    char file[CFG_STR];   // the configuration file read last ("" if none)
    int n_sections;       // its section headers and their lines
    struct {
        char name[CFG_NAME_LEN];
        int line;
    } section[CFG_MAX_SECTIONS];
    int n_given;          // values given in the file or by --set: "FILE:LINE" or "--set section.key=value"
    struct {
        char section[CFG_NAME_LEN], key[CFG_NAME_LEN];
        char origin[CFG_ORIGIN_LEN];
    } given[CFG_MAX_FIELDS];
} CfgSource;

// Writes (=) every key's default into cfg (required keys empty) and clears src. Never fails.
void cfg_defaults(const CfgSchema *s, void *cfg, CfgSource *src);
// Reads path over cfg. Returns 0, or -1 with every problem found in err, one
// "FILE:LINE: [section] key: what is wrong" line each.
int cfg_load_file(const CfgSchema *s, void *cfg, CfgSource *src, const char *path, char *err, size_t errlen);
// Applies one "section.key=value" override. Returns 0 or -1 ("--set ...: [section] key: ...").
int cfg_set(const CfgSchema *s, void *cfg, CfgSource *src, const char *assignment, char *err, size_t errlen);
// Appends (+=) "WHERE: [section] key: required key is missing" to err for every required key left
// empty; returns how many.
int cfg_check_required(const CfgSchema *s, const void *cfg, const CfgSource *src, char *err, size_t errlen);
// Where [section] key's value came from (=): "FILE:LINE", "--set section.key=value", or the file /
// its section's line for a default; the prefix of configuration errors.
void cfg_where(const CfgSource *src, const char *section, const char *key, char *buf, size_t len);
// Appends (+=) "WHERE: [section] key: what" to err (cross-key checks).
void cfg_complain(const CfgSource *src, const char *section, const char *key, const char *what, char *err,
                  size_t errlen);
// Appends (+=) one line to a list of problems (keeps what fits).
void cfg_err_add(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// The configuration as INI text: `title` as a comment, then every key with its canonical value
// (cfg_load_file of it gives the same configuration). Heap string (=), caller frees.
char *cfg_to_text(const CfgSchema *s, const void *cfg, const char *title);
// Compares cfg with a text from cfg_to_text (e.g. a checkpoint's). Keys marked resume_free are
// skipped. Returns 0, or -1 with every difference ("[optim] lr = 0.0001 (checkpoint: 5e-05)").
int cfg_compare_text(const CfgSchema *s, const void *cfg, const char *text, char *err, size_t errlen);
// Writes the Markdown reference of every key to f, after `intro` (the page's title and preamble).
void cfg_write_reference(const CfgSchema *s, FILE *f, const char *intro);
