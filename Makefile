# fanout: plain make, no generated build system.
#   make          build build/fanout (release flags)
#   make run      install what is missing, build, start a local PostgreSQL if none is configured, serve
#   make test     install what is missing, build, run unit + integration tests on a throwaway PostgreSQL
#   make valgrind the integration suite with the binary under valgrind --leak-check=full
#   make asan     the whole suite built with AddressSanitizer + UBSan
#   make tsan     the whole suite built with ThreadSanitizer
#   make stop     stop the local PostgreSQL that `make run` started
#   make deps     install missing Debian packages (as root)

CC      ?= cc
PKGS     = libevent libevent_openssl libpq jansson libssl libcrypto
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -D_GNU_SOURCE -I.
SAN     ?=
BUILD   ?= build
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_CFLAGS = $(shell pkg-config --cflags cmocka 2>/dev/null)
CMOCKA_LIBS   = $(shell pkg-config --libs cmocka 2>/dev/null)

ALL_CFLAGS = $(WARN) $(CFLAGS) $(SAN) $(PKG_CFLAGS) -DFANOUT_VERSION='"$(VERSION)"' -MMD -MP
LDLIBS     = $(PKG_LIBS) -lpthread -lm

# Every module's .c goes into one static library; service/main.c alone makes the binary.
LIB_SRC  = $(filter-out service/main.c, $(wildcard config/*.c db/*.c http/*.c service/*.c))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_SRC = $(wildcard tests/integration/*.c)
INTEG_OBJ = $(INTEG_SRC:%.c=$(BUILD)/obj/%.o)
INTEG_BIN = $(BUILD)/tests/integration

# Keep test objects between builds (make deletes intermediate files otherwise).
.SECONDARY:

.PHONY: all deps run stop test test-here valgrind asan tsan readme man check-container fault bench clean
all: $(BUILD)/fanout

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(BUILD)/libfanout.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fanout: $(BUILD)/obj/service/main.o $(BUILD)/libfanout.a
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/libfanout.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS)

$(INTEG_BIN): $(INTEG_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh $(ARGS)

stop:
	@scripts/localpg.sh stop-run

# The test targets build with -O0 so a debugger and valgrind see every line.
TEST_CFLAGS = -O0 -g

# The release build comes first: -O2 finds warnings (-Werror) that -O0 does not.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory fuzz-regress
	@$(MAKE) --no-print-directory BUILD=build/debug CFLAGS="$(TEST_CFLAGS)" check-container test-here

# Validate Dockerfile and docker-compose.yml offline (no Docker engine runs on our machines).
check-container: $(BUILD)/fanout
	@FANOUT_BIN=$(BUILD)/fanout scripts/check-container.sh

test-here: $(BUILD)/fanout $(UNIT_BIN) $(INTEG_BIN)
	@$(if $(VALGRIND_LOGS),rm -rf $(VALGRIND_LOGS) && mkdir -p $(VALGRIND_LOGS))
	@VALGRIND_LOGS=$(VALGRIND_LOGS) scripts/test.sh $(BUILD) $(TEST_WRAPPER)

valgrind: deps
	@$(MAKE) --no-print-directory BUILD=build/debug CFLAGS="$(TEST_CFLAGS)" \
	  TEST_WRAPPER="valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --log-file=$(CURDIR)/build/debug/valgrind/fanout.%p.log" \
	  VALGRIND_LOGS=build/debug/valgrind test-here

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan CC=clang CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test-here

tsan: deps
	@TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp $$TSAN_OPTIONS" \
	  $(MAKE) --no-print-directory BUILD=build/tsan CC=clang CFLAGS="-O1 -g" SAN="-fsanitize=thread" test-here

# Regenerate the README's settings table from the config module's table (a unit test checks it).
readme: $(BUILD)/libfanout.a
	$(CC) $(ALL_CFLAGS) -o $(BUILD)/settings_table tests/tools/settings_table.c $(BUILD)/libfanout.a $(LDLIBS)
	$(BUILD)/settings_table > $(BUILD)/settings.md
	sed -i -e '/<!-- settings:begin -->/,/<!-- settings:end -->/{/<!-- settings:/!d}' \
	  -e '/<!-- settings:begin -->/r $(BUILD)/settings.md' README.md

# The man page is generated from --help and --version (commit the result).
man: $(BUILD)/fanout
	help2man --no-info --name="run batches of PostgreSQL queries concurrently over HTTP" \
	  --section=1 --output=docs/fanout.1 $(BUILD)/fanout

# Fuzzing (libFuzzer, clang): tests/fuzz/README. Harnesses link the module sources directly.
#   make fuzz          each harness for FUZZ_SECONDS (default 60), one after the other; new inputs
#                      go to build/fuzz/corpus-NAME, crashes to build/fuzz/crashes/; fails on a crash
#   make fuzz-regress  each harness once over the committed corpus and regressions (seconds)
FUZZ_SECONDS ?= 60
FUZZ_NICE    ?= nice -n 10
FUZZ_DIR      = build/fuzz
FUZZ_NAMES    = request encode
FUZZ_CFLAGS   = $(WARN) -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all $(shell pkg-config --cflags libpq jansson 2>/dev/null)
FUZZ_LIBS     = $(shell pkg-config --libs jansson 2>/dev/null) -lm
FUZZ_SRC_request = http/request.c
FUZZ_SRC_encode  = db/buf.c db/encode.c http/request.c
FUZZ_OPTS    ?= -max_len=32768 -timeout=10

.PHONY: fuzz fuzz-regress
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard db/*.[ch] http/*.[ch]) Makefile
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC_$*) $(FUZZ_LIBS)

fuzz: $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
	@mkdir -p $(FUZZ_DIR)/crashes
	@fail=0; for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus-$$n; \
	  echo "fuzz_$$n: $(FUZZ_SECONDS) s, log in $(FUZZ_DIR)/$$n.log"; \
	  $(FUZZ_NICE) $(FUZZ_DIR)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -dict=tests/fuzz/$$n.dict -artifact_prefix=$(FUZZ_DIR)/crashes/$$n- $(FUZZ_OPTS) \
	    $(FUZZ_DIR)/corpus-$$n tests/fuzz/corpus/$$n >$(FUZZ_DIR)/$$n.log 2>&1 \
	    || { fail=1; echo "fuzz_$$n: FAILED"; grep -A40 '^==.*ERROR\|check failed\|oracle' $(FUZZ_DIR)/$$n.log | head -60; }; \
	  grep -E 'stat::number_of_executed_units|stat::new_units_added' $(FUZZ_DIR)/$$n.log; \
	done; ls $(FUZZ_DIR)/crashes; exit $$fail

fuzz-regress: $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
	@for n in $(FUZZ_NAMES); do \
	  files=$$(find tests/fuzz/corpus/$$n tests/fuzz/regressions/$$n -type f ! -name '.*' 2>/dev/null | sort); \
	  [ -n "$$files" ] || { echo "fuzz_$$n: no inputs"; exit 1; }; \
	  $(FUZZ_DIR)/fuzz_$$n $$files >$(FUZZ_DIR)/$$n-regress.log 2>&1 \
	    || { tail -40 $(FUZZ_DIR)/$$n-regress.log; echo "fuzz_$$n: FAILED"; exit 1; }; \
	  echo "fuzz_$$n: $$(echo "$$files" | wc -l) inputs ok"; \
	done

# The scripted fault run (tests/fault/run.sh, about 90 s): wrk load on the release build while its
# throwaway PostgreSQL is stopped and started again; prints each pass criterion with its figure.
fault: deps
	@$(MAKE) --no-print-directory all
	@tests/fault/run.sh $(BUILD)/fanout

# The benchmark (issue 5, bench/README.md, about 17 minutes): a throwaway PostgreSQL with the
# pgbench schema, pgbench, the release build and the peer services of bench/peers/ under wrk; prints
# one table of medians and the targets, writes bench/results/latest.json and latest.svg.
#   make bench BENCH_SECONDS=3 BENCH_REPEAT=1    a quick run (see bench/run.sh for every knob)
bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench-floor
	@FANOUT_BIN=$(BUILD)/fanout FLOOR_BIN=$(BUILD)/bench-floor bench/run.sh

# (d)'s floor: the same sleeps from a plain libpq program, no HTTP (bench/floor.c).
$(BUILD)/bench-floor: $(BUILD)/obj/bench/floor.o
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
