# radixserve — build, test and run.
#
#   make            build bin/radixserve
#   make run        install what is missing, build, serve the embedded default model
#   make test       install what is missing, build, run every test (prints "N passed, N failed")
#   make test-asan  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-tsan  the scheduler and server tests under ThreadSanitizer
#   make fuzz       every libFuzzer target in fuzz/ for FUZZ_SECONDS each (clang, ASan + UBSan)
#   make bench      benchmarks (run on a quiet machine; not part of make test)
#   make deps       install missing system packages and test-side npm packages (idempotent)
#   make format     clang-format every C file
#
# Every room (cache/ engine/ tokenizer/ api/ chat/ sched/ server/ util/ cli/) is compiled from a
# wildcard, so a new .c file needs no Makefile edit. Files named *_avx2.c / *_avx512.c /
# *_avx512bf16.c get their ISA flags here and nowhere else: the rest of the code runs on any
# x86-64 and the engine picks a kernel set at run time (engine/kernels.h).

MODE    ?= release
BUILD   ?= build/$(MODE)
CC      ?= cc
MODEL   ?= models/stories260K
PORT    ?= 8080
HOST    ?= 127.0.0.1

WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow
DEFS    := -D_GNU_SOURCE
INCS    := -I. -I/usr/include/x86_64-linux-gnu/openblas-pthread
CFLAGS_release := -O2 -g
# The sanitizer modes also check the scheduler's invariants after every step (sched_int.h).
CFLAGS_asan    := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DRS_SCHED_CHECK
CFLAGS_tsan    := -O1 -g -fsanitize=thread -fno-omit-frame-pointer -DRS_SCHED_CHECK
CFLAGS_fuzz    := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ALL_CFLAGS  = $(WARN) $(DEFS) $(INCS) $(CFLAGS_$(MODE)) -pthread -MMD -MP $(CFLAGS)
LDFLAGS_asan := -fsanitize=address,undefined
LDFLAGS_tsan := -fsanitize=thread
LDFLAGS_fuzz := -fsanitize=address,undefined
LIBS    := -lmicrohttpd -lcjson -lopenblas -lpcre2-8 -lutf8proc -lm -lpthread
ALL_LDFLAGS = $(LDFLAGS_$(MODE)) -pthread $(LDFLAGS)

ISA_avx2   := -mavx2 -mfma -mf16c
ISA_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c
ISA_avx512bf16 := $(ISA_avx512) -mavx512bf16
# MODE=fuzz: the ISA kernels (arithmetic over shapes the loader checked; no fuzz target runs
# them) are built without instrumentation: clang takes tens of minutes on them with it.
ISA_fuzz_fuzz := -fno-sanitize=address,undefined,fuzzer-no-link

ROOMS    ?= util cache tokenizer grammar engine api chat sched server cli
LIB_SRCS := $(foreach r,$(ROOMS),$(wildcard $(r)/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/webui.o
# The web UI (webui/, served by server/srv_static.c) is compiled into the binary as C arrays.
WEBUI_FILES := $(shell find webui -type f -not -name '.*' | LC_ALL=C sort)
LIB      := $(BUILD)/libradixserve.a
BIN      ?= bin/radixserve$(if $(filter release,$(MODE)),,-$(MODE))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%) $(BUILD)/bench/bench_engine_profile
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 600
FUZZ_JOBS    ?= 1

.PHONY: all deps deps-test run test test-asan test-tsan bench format clean tests bench-bins \
        fuzz fuzz-bins FORCE

all: $(BIN)

# deps is phony and order-only for every object: it always runs first, also under -j, and is
# a fast no-op when everything is present.
deps:
	@bash scripts/deps.sh

deps-test:
	@bash scripts/deps.sh --test

$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(if $(findstring _avx512bf16,$*),$(ISA_avx512bf16) $(ISA_fuzz_$(MODE)),$(if $(findstring _avx512,$*),$(ISA_avx512) $(ISA_fuzz_$(MODE)),$(if $(findstring _avx2,$*),$(ISA_avx2) $(ISA_fuzz_$(MODE))))) -c $< -o $@

# The list of embedded files is rewritten only when it changes, so removing a file re-embeds too.
$(BUILD)/gen/webui.list: FORCE
	@mkdir -p $(dir $@)
	@echo $(WEBUI_FILES) | cmp -s - $@ || echo $(WEBUI_FILES) >$@

$(BUILD)/gen/webui.c: $(BUILD)/gen/webui.list $(WEBUI_FILES) scripts/embed-webui.sh
	bash scripts/embed-webui.sh $@ $(WEBUI_FILES)

$(BUILD)/obj/gen/webui.o: $(BUILD)/gen/webui.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/obj/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/%.c $(LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LIBS)

# bench_engine with per-phase timers (engine/profile.h): forward.c compiled again with
# -DENG_PROFILE and linked ahead of the library, whose own forward.o is then never pulled in.
PROFILE_OBJ := $(BUILD)/obj-profile/engine/forward.o
$(PROFILE_OBJ): engine/forward.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DENG_PROFILE -c $< -o $@

$(BUILD)/bench/bench_engine_profile: bench/bench_engine.c $(PROFILE_OBJ) $(LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DENG_PROFILE $(ALL_LDFLAGS) -o $@ $< $(PROFILE_OBJ) $(LIB) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LIBS)

# libFuzzer targets: MODE=fuzz builds the library with clang's coverage hooks; only the target
# itself links libFuzzer's main.
$(BUILD)/fuzz/%: fuzz/%.c fuzz/fuzz.h $(LIB) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LIBS)

tests: $(BIN) $(TEST_BINS) $(BENCH_BINS)
bench-bins: $(BIN) $(BENCH_BINS)

test: deps-test
	@$(MAKE) --no-print-directory tests MODE=$(MODE)
	@MODE=$(MODE) BUILD=$(BUILD) BIN=$(BIN) bash tests/run.sh $(T)

test-asan:
	@$(MAKE) --no-print-directory test MODE=asan

test-tsan:
	@$(MAKE) --no-print-directory test MODE=tsan T="$(or $(T),sched server)"

fuzz-bins: $(FUZZ_BINS)

# Each target for FUZZ_SECONDS (FUZZ_JOBS at a time) from its committed seeds; fails on any
# finding (crash, sanitizer report, leak, timeout), whose input is left in build/fuzz/findings/.
fuzz:
	@bash scripts/deps.sh --fuzz
	@$(MAKE) --no-print-directory fuzz-bins MODE=fuzz CC=clang
	@bash fuzz/run.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS)

run: deps
	@$(MAKE) --no-print-directory $(BIN)
	@bash scripts/run.sh $(BIN) "$(MODEL)" $(HOST) $(PORT)

bench: deps-test
	@$(MAKE) --no-print-directory bench-bins
	@bash bench/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin

-include $(LIB_OBJS:.o=.d) $(PROFILE_OBJ:.o=.d) $(BUILD)/obj/main.d $(TEST_BINS:=.d) $(BENCH_BINS:=.d)
