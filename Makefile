# telehook — the two commands a newcomer needs:
#   make run    install missing Debian packages, build, start the server on the embedded default
#   make check  install, build, run every test suite (unit, end-to-end, sanitizers, valgrind)
# Other targets: build, install, unit, e2e, asan, tsan, valgrind, fuzz, bench, format, format-check,
# clean.

BUILD     ?= build
ASAN      ?= build-asan
TSAN      ?= build-tsan
FUZZ      ?= build-fuzz
FUZZ_SECONDS ?= 20
MESON_DEV  = -Dwerror=true -Dbuildtype=debugoptimized
CONFIG    ?= etc/telehook.conf
PREFIX    ?= /usr/local
DESTDIR   ?=
PYTHON    ?= /usr/bin/python3
PYTEST     = $(PYTHON) -m pytest -q -p no:cacheprovider
# The test suites run against a throw-away PostgreSQL too (TH_TEST_PG_URL); its store cases fail
# rather than skip without one. `make run` needs no PostgreSQL.
WITH_PG    = TH_TEST_REQUIRE_PG=1 scripts/with-postgres.sh

.PHONY: all deps deps-check build build-tests install package-check run check unit e2e asan tsan valgrind fuzz format format-check clean bench

all: build

deps:
	@scripts/install-deps.sh build

deps-check:
	@scripts/install-deps.sh check

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_DEV)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The test targets need the unit tests built: turn them on in a tree that `make run` set up without
# cmocka (meson re-detects it now that deps-check has installed it).
build-tests: deps-check $(BUILD)/build.ninja
	@meson introspect --buildoptions $(BUILD) | grep -q '"name": "tests", "value": "enabled"' \
	  || meson configure $(BUILD) -Dtests=enabled
	ninja -C $(BUILD)

# The binary (PREFIX/sbin), telehook(8), telehook.conf(5) generated from the configuration table,
# bash completion and the example configuration (PREFIX/share/doc/telehook/examples).
install: build
	@meson introspect --buildoptions $(BUILD) | grep -q '"name": "prefix", "value": "$(PREFIX)"' \
	  || meson configure $(BUILD) -Dprefix=$(PREFIX)
	meson install -C $(BUILD) --quiet $(if $(DESTDIR),--destdir "$(abspath $(DESTDIR))")

# The Debian package: built, lintian, the unit's security rating, installed in a fresh Debian 12
# chroot where it serves Okta's sample as its own user (scripts/package-test.sh; needs root).
package-check:
	scripts/package-test.sh

# Development server: SQLite in ./var, the outbox provider, header auth with a secret generated
# once into var/dev-secret, which etc/telehook.conf names (see README for the curl example).
run: build
	@mkdir -p var
	@[ -s var/dev-secret ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > var/dev-secret)
	$(BUILD)/telehook serve -c $(CONFIG)

check: build-tests
	$(MAKE) --no-print-directory format-check unit e2e asan tsan valgrind fuzz

unit: build-tests
	$(WITH_PG) meson test -C $(BUILD) --suite unit --print-errorlogs

e2e: build-tests
	TELEHOOK_BIN=$(abspath $(BUILD)/telehook) $(WITH_PG) $(PYTEST) tests/e2e

$(ASAN)/build.ninja:
	meson setup $(ASAN) -Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

# Unit and end-to-end suites once more under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps-check $(ASAN)/build.ninja
	ninja -C $(ASAN)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(WITH_PG) meson test -C $(ASAN) --suite unit --print-errorlogs
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  TELEHOOK_BIN=$(abspath $(ASAN)/telehook) TELEHOOK_SANITIZED=1 $(WITH_PG) $(PYTEST) tests/e2e

$(TSAN)/build.ninja:
	meson setup $(TSAN) -Dwerror=true -Dbuildtype=debug -Db_sanitize=thread -Db_lundef=false

# The threaded paths under ThreadSanitizer: every unit suite (loops, the curl multi, the writer,
# the guard), then the end-to-end suites that drive loops, provider transfers, the credentials
# and key fetchers and the writer at once (and the writer's conversion signals reaching the
# tracker, the feedback queue and route health from its thread). Any report fails the run.
tsan: deps-check $(TSAN)/build.ninja
	ninja -C $(TSAN)
	TSAN_OPTIONS=halt_on_error=1 meson test -C $(TSAN) --suite unit --print-errorlogs
	rm -rf $(TSAN)/reports && mkdir -p $(TSAN)/reports
	TSAN_OPTIONS=log_path=$(abspath $(TSAN))/reports/tsan TELEHOOK_BIN=$(abspath $(TSAN)/telehook) \
	  TELEHOOK_SANITIZED=1 $(PYTEST) tests/e2e/test_providers.py tests/e2e/test_oauth.py \
	  tests/e2e/test_dlq.py tests/e2e/test_guard.py tests/e2e/test_conversion.py \
	  tests/e2e/test_pumping.py
	@if ls $(TSAN)/reports/tsan.* >/dev/null 2>&1; then cat $(TSAN)/reports/tsan.*; exit 1; fi

# Unit suite under valgrind memcheck: any error or definite leak fails.
valgrind: build-tests
	$(WITH_PG) meson test -C $(BUILD) --suite unit --print-errorlogs --timeout-multiplier=6 \
	  --wrap='valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite'

$(FUZZ)/build.ninja:
	CC=clang CXX=clang++ meson setup $(FUZZ) -Dfuzz=true -Dbuildtype=debugoptimized \
	  -Db_sanitize=address,undefined -Db_lundef=false \
	  -Dc_args=-fsanitize=fuzzer-no-link -Dcpp_args=-fsanitize=fuzzer-no-link

# Each libFuzzer target for FUZZ_SECONDS from its seed corpus (new inputs go to a scratch dir).
fuzz: deps-check $(FUZZ)/build.ninja
	ninja -C $(FUZZ)
	@for t in okta phone phone_e164 template jwt config provider sts framing kms okta_events; do \
	  mkdir -p $(FUZZ)/corpus-$$t; \
	  dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS)s"; \
	  $(FUZZ)/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -rss_limit_mb=1024 \
	    $$dict $(FUZZ)/corpus-$$t tests/fuzz/corpus/$$t 2>$(FUZZ)/fuzz_$$t.log \
	    || { tail -40 $(FUZZ)/fuzz_$$t.log; exit 1; }; \
	  tail -1 $(FUZZ)/fuzz_$$t.log; \
	done

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cc' 2>/dev/null)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN) $(FUZZ)

# Throughput, latency, 1,000 in flight, start-up against two nginx references (bench/README.md).
# Options: make bench BENCH_ARGS="--quick" (or --duration S, --connections N, --only a,c).
bench:
	bench/run $(BENCH_ARGS)
