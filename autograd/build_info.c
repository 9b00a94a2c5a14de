// The build's identity (see autograd/build_info.h). The two headers are generated in the build
// directory: dod_build_info.h by configure (scripts/build_info.h.in), dod_git_revision.h at every
// build (scripts/git_revision.cmake).
#include "autograd/build_info.h"

#include <string.h>

#include "dod_build_info.h"
#include "dod_git_revision.h"

const char *dod_version(void) { return DOD_VERSION; }
const char *dod_git_revision(void) { return DOD_GIT_REVISION; }

void dod_print_version(FILE *f, const char *tool) {
    fprintf(f, "%s %s (git %s), %s build, %s\ndependencies:\n%s", tool, DOD_VERSION, DOD_GIT_REVISION, DOD_BUILD_TYPE,
            DOD_C_COMPILER, DOD_DEPENDENCIES);
}

bool dod_version_requested(int argc, char **argv, const char *tool) {
    if (argc < 2 || strcmp(argv[1], "--version")) return false;
    dod_print_version(stdout, tool);
    return true;
}
