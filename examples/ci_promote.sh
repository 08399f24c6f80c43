#!/usr/bin/env bash
# A CI step: evaluate a registered version against the champion, request its
# promotion, and wait for the approvers. Safe to retry: the idempotency key is
# derived from the pipeline, so a re-run finds the request it already opened.
#
#   REGISTRY_URL=http://127.0.0.1:8080 REGISTRY_TOKEN=... \
#     examples/ci_promote.sh breast-cancer 3 Production
#
# Exit codes: 0 executed; 1 refused (bad input, not allowed, conflict);
# 3 service unreachable; 4 rejected/cancelled/expired/failed; 5 still waiting.
set -uo pipefail

model=${1:?usage: ci_promote.sh MODEL VERSION [STAGE]}
version=${2:?usage: ci_promote.sh MODEL VERSION [STAGE]}
stage=${3:-Staging}
cli=${REGISTRY_CLI:-registry-service}
# GitLab, then GitHub; outside CI every invocation is a new attempt.
pipeline=${CI_PIPELINE_ID:-${GITHUB_RUN_ID:-local-$(date +%s)}}
commit=${CI_COMMIT_SHA:-${GITHUB_SHA:-}}
key="ci-${pipeline}-${model}-${version}-${stage}"
reason="CI pipeline ${pipeline}: ${model} v${version} to ${stage}${commit:+ at ${commit}}"

# Informational: how the challenger compares with the champion under the policy.
"$cli" evaluate "$model" "$version" --dry-run || true

"$cli" promote request "$model" "$version" --stage "$stage" --reason "$reason" \
  --idempotency-key "$key" --wait --timeout "${WAIT_TIMEOUT:-3600}"
rc=$?
case $rc in
  0) echo "promoted ${model} v${version} to ${stage}" ;;
  4) echo "promotion of ${model} v${version} ended without executing" >&2 ;;
  5) echo "approvers have not decided yet; re-run this step to keep waiting" >&2 ;;
  *) echo "promotion request failed (exit ${rc})" >&2 ;;
esac
exit $rc
