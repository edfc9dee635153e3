# What the browser test scripts (wasm-web/scripts/test.sh, tests/e2e/run.sh) share about the three
# engines; sourced, not run.
#   browser_version ENGINE        the version of Debian's chromium, firefox-esr or WebKitGTK
#   start_private_xvfb WORK_DIR   starts an Xvfb of its own once (WebKitGTK's MiniBrowser needs a
#                                 display), on a free display number (-displayfd); sets
#                                 xvfb_pid and xvfb_display. The caller kills xvfb_pid on exit.

browser_version() {
  case "$1" in
    chromium) chromium --version | awk '{print $2}' ;;
    firefox) firefox-esr --version | awk '{print $3}' ;;
    # The library's version: the driver and MiniBrowser print none of their own.
    webkit) dpkg-query -W -f '${Version}' libwebkit2gtk-4.1-0 2>/dev/null | sed 's/-.*//' ;;
    *) echo "unknown" ;;
  esac
}

xvfb_pid="${xvfb_pid:-}"
xvfb_display="${xvfb_display:-}"
start_private_xvfb() {
  if [ -n "$xvfb_pid" ]; then
    return
  fi
  local fifo="$1/xvfb.display" number
  mkfifo "$fifo"
  Xvfb -displayfd 3 -screen 0 1400x1000x24 -nolisten tcp 3>"$fifo" 2>>"$1/xvfb.log" &
  xvfb_pid=$!
  read -r -t 30 number <"$fifo" || { echo "error: Xvfb did not start" >&2; exit 1; }
  xvfb_display=":$number"
}
