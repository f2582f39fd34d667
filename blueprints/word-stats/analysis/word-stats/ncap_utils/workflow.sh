# The end-of-job helpers of a NeuroCAAS analysis (as in neurocaas_contrib's ncap_utils/workflow.sh).
# `cleanup [PATHS...]` removes temporary paths, then halts the machine in one minute: job
# instances are terminated, a development instance is stopped.
cleanup() {
  [ "$#" -gt 0 ] && rm -rf -- "$@"
  shutdown -h 1
}
