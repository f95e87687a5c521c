/* Prints the header's layout as "name size" / "struct.field offset" lines for the ctypes check. */
#include <stdio.h>
#include "pypm_plugin.h"

#define OFF(T, F) printf(#T "." #F " %zu\n", offsetof(struct T, F))

int main(void) {
    printf("abi %d\n", PYPM_PLUGIN_ABI_VERSION);
    printf("sizeof.pypm_context %zu\n", sizeof(struct pypm_context));
    printf("sizeof.pypm_package %zu\n", sizeof(struct pypm_package));
    OFF(pypm_package, name); OFF(pypm_package, version); OFF(pypm_package, wheel_path); OFF(pypm_package, sha256);
    OFF(pypm_context, abi_version); OFF(pypm_context, stage_id); OFF(pypm_context, stage);
    OFF(pypm_context, plugin_name); OFF(pypm_context, project_root); OFF(pypm_context, venv);
    OFF(pypm_context, lock_path); OFF(pypm_context, interpreter); OFF(pypm_context, config_json);
    OFF(pypm_context, packages); OFF(pypm_context, n_packages); OFF(pypm_context, report);
    printf("stage.pre-lock %u\nstage.post-lock %u\nstage.pre-sync %u\nstage.post-sync %u\n",
           PYPM_STAGE_PRE_LOCK, PYPM_STAGE_POST_LOCK, PYPM_STAGE_PRE_SYNC, PYPM_STAGE_POST_SYNC);
    printf("stage.pre-build %u\nstage.post-build %u\nstage.pre-run %u\nstage.post-run %u\n",
           PYPM_STAGE_PRE_BUILD, PYPM_STAGE_POST_BUILD, PYPM_STAGE_PRE_RUN, PYPM_STAGE_POST_RUN);
    return 0;
}
