// Matching degraded (LQ) and clean (HQ) image files, for `dod-data pack`. Pure C, names only.
//
// By name (pair_by_name): every LQ file is matched to the HQ file whose stem (name without
// extension, any of .png .jpg .jpeg .bmp) is the first that exists of:
//   1. the LQ stem itself                     (LOL low/high, GoPro blur/sharp: same names)
//   2. "no" + the LQ stem, when it starts with "rain"   (Rain100L/H: rain-001 -> norain-001)
//   3. the LQ stem up to its first '_'        (RESIDE SOTS/OTS: 0001_0.8_0.2 -> 0001)
// Several LQ files may share one HQ file (OTS has many hazy images per clear one).
// By list (pair_from_list): one "LQ HQ" pair per line (a tab separates them when the line has
// one, else whitespace); '#' starts a comment; relative paths are taken inside the --lq / --hq
// directories when given, else as they are.
#pragma once
#include <stddef.h>

typedef struct {
    char *lq, *hq;   // full paths (heap)
} PathPair;

typedef struct {
    PathPair *pairs;
    int n_pairs;
    char **unmatched_lq;   // LQ files with no HQ partner (full paths)
    int n_unmatched_lq;
    char **unmatched_hq;   // HQ files no LQ file chose (full paths)
    int n_unmatched_hq;
} PairList;

// Image files (by extension, case-insensitive) directly inside dir, names sorted by strcmp so the
// order is the same on every machine. Writes (=) *names (heap strings, free with free_names).
int list_images(const char *dir, char ***names, int *n, char *err, size_t errlen);
void free_names(char **names, int n);
// Whether a file name has an image extension (.png .jpg .jpeg .bmp, any case).
int is_image_name(const char *name);

// Writes (=) out. Returns 0, or -1 with a message (a directory that cannot be read, or two HQ
// files with the same stem, which would make a match ambiguous). Unmatched files are not an
// error here: they are returned for the caller to list.
int pair_by_name(const char *lq_dir, const char *hq_dir, PairList *out, char *err, size_t errlen);
// Writes (=) out from a pair-list file (see above). lq_dir / hq_dir may be NULL.
// Returns 0, or -1 naming the list file and line at fault.
int pair_from_list(const char *list_path, const char *lq_dir, const char *hq_dir, PairList *out, char *err,
                   size_t errlen);
void pairlist_free(PairList *pl);

// The HQ stem rule that matched (1, 2 or 3 above) for an LQ stem against a set of HQ stems,
// exposed for tests: writes the chosen HQ stem into hq_stem and returns the rule, or 0.
int pair_match_stem(const char *lq_stem, const char *const *hq_stems, int n_hq, char *hq_stem, size_t len);
