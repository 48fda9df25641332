# Sourced by the scripts: a target directory kept outside the clone (a cold
# build of the cloud SDKs takes over 10 minutes on 2 cores), and the tools
# installed for the tests on PATH.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshmirror-target}"
export MESHMIRROR_TOOLS="${MESHMIRROR_TOOLS:-$HOME/.cache/meshmirror-tools}"
mkdir -p "$CARGO_TARGET_DIR" "$MESHMIRROR_TOOLS"
export PATH="$MESHMIRROR_TOOLS/cargo/bin:$MESHMIRROR_TOOLS/node_modules/.bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Tests talk to 127.0.0.1 only; the AWS SDK must not look for instance metadata.
export AWS_EC2_METADATA_DISABLED=true
