# Writes OUT (a C header defining DOD_GIT_REVISION) from `git describe --always --dirty` of SOURCE_DIR,
# or "unknown" when SOURCE_DIR is not the top of a git checkout (a tarball, or git missing). Run by
# CMake at every build (CMakeLists.txt, target dod_git_revision); OUT is rewritten only when its text
# changes, so an unchanged revision rebuilds nothing.
#   cmake -DSOURCE_DIR=... -DOUT=.../dod_git_revision.h -P scripts/git_revision.cmake
set(revision "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --show-toplevel WORKING_DIRECTORY ${SOURCE_DIR}
                  OUTPUT_VARIABLE top RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  get_filename_component(top "${top}" REALPATH)
  get_filename_component(src "${SOURCE_DIR}" REALPATH)
  if(rc EQUAL 0 AND top STREQUAL src)
    execute_process(COMMAND ${GIT_EXECUTABLE} describe --always --dirty WORKING_DIRECTORY ${SOURCE_DIR}
                    OUTPUT_VARIABLE described RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(rc EQUAL 0 AND described)
      set(revision "${described}")
    endif()
  endif()
endif()
set(text "// Generated at build time by scripts/git_revision.cmake.\n#pragma once\n#define DOD_GIT_REVISION \"${revision}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
