//! The daemons fuzzed end to end by `cli/tests/fuzz_e2e.py`: a real `dtest node` and `dtest serve`
//! take 100,000 random and mutated requests with the right token, and `dtest run` takes hostile
//! replies from fake nodes. Each case starts its own processes and stops them before it returns;
//! its seed is printed, and `DTEST_FUZZ_SEED` replays it.

#[test]
fn node_and_serve() {
    crate::python_case("fuzz_e2e.py", "node_and_serve");
}

#[test]
fn hostile_node() {
    crate::python_case("fuzz_e2e.py", "hostile_node");
}
