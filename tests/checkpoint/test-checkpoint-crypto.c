/*
 * test-checkpoint-crypto.c — known answers for the checkpoint module's
 * building blocks, no network: Keccak-256 (Ethereum padding), RLP, EIP-155
 * signing (the example transaction of the EIP itself, byte for byte),
 * addresses of the ganache deterministic keys, EIP-55, the contract's ABI
 * selectors, revert decoding, hex parsing and signer key files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint-internal.h"

static void unhex(const char *s, uint8_t *out, size_t len)
{
    if (s[0] == '0' && s[1] == 'x')
        s += 2;
    assert_int_equal(strlen(s), 2 * len);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void assert_hex(const uint8_t *data, size_t len, const char *want)
{
    char *got = malloc(2 * len + 3);
    assert_non_null(got);
    cp_hex_encode(data, len, got);
    if (want[0] != '0' || want[1] != 'x')
        assert_string_equal(got + 2, want);
    else
        assert_string_equal(got, want);
    free(got);
}

static void keccak_of(const char *text, size_t len, const char *want)
{
    uint8_t h[32];
    cp_keccak256(text, len, h);
    assert_hex(h, 32, want);
}

static void test_keccak(void **state)
{
    (void)state;
    keccak_of("", 0,
              "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    keccak_of("abc", 3,
              "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
    /* Around and over the 136-byte rate (values from ganache's web3_sha3). */
    char a[272];
    memset(a, 'a', sizeof a);
    keccak_of(a, 135,
              "34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446");
    keccak_of(a, 136,
              "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e");
    keccak_of(a, 272,
              "cf7fcd4f705ee749930d19ca84561a9bf62516bd90a471545fa2f49fdc7e63c8");
}

static void test_abi_selectors(void **state)
{
    (void)state;
    /* Pinned against solc's ABI (ethnode.md §3): a typo in a signature
     * string would otherwise only show on a live chain. */
    uint8_t h[32];
    cp_keccak256("anchor(bytes32,uint64,bytes32)", 30, h);
    assert_hex(h, 4, "70c127c6");
    cp_keccak256("latest(bytes32,address)", 23, h);
    assert_hex(h, 4, "7fd1c47f");
    cp_keccak256("NotMonotonic(uint64,uint64)", 27, h);
    assert_hex(h, 4, "527e3c58");
    const char *ev = "Anchored(bytes32,address,uint64,bytes32)";
    cp_keccak256(ev, strlen(ev), h);
    assert_hex(h, 32,
               "969e3a440e8d07c3b6d58e32cc30d7f6360260b7c6a5ea49345e77217e2cb4c8");
}

static void rlp_is(cp_rlp *r, const char *want)
{
    assert_int_equal(r->err, 0);
    assert_hex(r->p, r->len, want);
    cp_rlp_free(r);
    cp_rlp_init(r);
}

static void test_rlp(void **state)
{
    (void)state;
    cp_rlp r;
    cp_rlp_init(&r);
    cp_rlp_bytes(&r, "dog", 3);
    rlp_is(&r, "83646f67");
    size_t l = cp_rlp_begin_list(&r);
    cp_rlp_bytes(&r, "cat", 3);
    cp_rlp_bytes(&r, "dog", 3);
    cp_rlp_end_list(&r, l);
    rlp_is(&r, "c88363617483646f67");
    cp_rlp_bytes(&r, "", 0);
    rlp_is(&r, "80");
    l = cp_rlp_begin_list(&r);
    cp_rlp_end_list(&r, l);
    rlp_is(&r, "c0");
    cp_rlp_uint(&r, 0);
    rlp_is(&r, "80");
    cp_rlp_uint(&r, 15);
    rlp_is(&r, "0f");
    cp_rlp_uint(&r, 1024);
    rlp_is(&r, "820400");
    uint8_t zero = 0;
    cp_rlp_bytes(&r, &zero, 1); /* the byte 0x00 is itself, not an integer */
    rlp_is(&r, "00");
    /* The set-theoretic representation of three: [ [], [[]], [ [], [[]] ] ] */
    size_t outer = cp_rlp_begin_list(&r);
    l = cp_rlp_begin_list(&r);
    cp_rlp_end_list(&r, l);
    l = cp_rlp_begin_list(&r);
    size_t in = cp_rlp_begin_list(&r);
    cp_rlp_end_list(&r, in);
    cp_rlp_end_list(&r, l);
    l = cp_rlp_begin_list(&r);
    in = cp_rlp_begin_list(&r);
    cp_rlp_end_list(&r, in);
    in = cp_rlp_begin_list(&r);
    size_t in2 = cp_rlp_begin_list(&r);
    cp_rlp_end_list(&r, in2);
    cp_rlp_end_list(&r, in);
    cp_rlp_end_list(&r, l);
    cp_rlp_end_list(&r, outer);
    rlp_is(&r, "c7c0c1c0c3c0c1c0");
    /* 56 bytes: the long form starts here. */
    const char *lorem = "Lorem ipsum dolor sit amet, consectetur adipisicing elit";
    cp_rlp_bytes(&r, lorem, 56);
    assert_int_equal(r.len, 58);
    assert_int_equal(r.p[0], 0xb8);
    assert_int_equal(r.p[1], 56);
    assert_memory_equal(r.p + 2, lorem, 56);
    cp_rlp_free(&r);
    /* A 1024-byte string: two length bytes. */
    uint8_t big[1024];
    memset(big, 0xab, sizeof big);
    cp_rlp_init(&r);
    cp_rlp_bytes(&r, big, sizeof big);
    assert_int_equal(r.len, 1027);
    assert_int_equal(r.p[0], 0xb9);
    assert_int_equal(r.p[1], 0x04);
    assert_int_equal(r.p[2], 0x00);
    cp_rlp_free(&r);
}

/* EIP-155's own example: nonce 9, gas price 20 gwei, gas 21000, to
 * 0x3535…35, value 1 ether, no data, chain id 1, key 0x4646…46. */
static void test_eip155_example(void **state)
{
    (void)state;
    uint8_t key[32];
    memset(key, 0x46, sizeof key);
    cp_legacy_tx tx = {
        .nonce = 9,
        .gas_price = 20000000000ull,
        .gas_limit = 21000,
        .has_to = 1,
        .value = 1000000000000000000ull,
        .chain_id = 1,
    };
    memset(tx.to, 0x35, 20);

    /* The signing payload and its hash, as the EIP gives them. */
    cp_rlp r;
    cp_rlp_init(&r);
    size_t l = cp_rlp_begin_list(&r);
    cp_rlp_uint(&r, tx.nonce);
    cp_rlp_uint(&r, tx.gas_price);
    cp_rlp_uint(&r, tx.gas_limit);
    cp_rlp_bytes(&r, tx.to, 20);
    cp_rlp_uint(&r, tx.value);
    cp_rlp_bytes(&r, NULL, 0);
    cp_rlp_uint(&r, 1);
    cp_rlp_uint(&r, 0);
    cp_rlp_uint(&r, 0);
    cp_rlp_end_list(&r, l);
    assert_hex(r.p, r.len,
               "ec098504a817c800825208943535353535353535353535353535353535353535"
               "880de0b6b3a764000080018080");
    uint8_t h[32];
    cp_keccak256(r.p, r.len, h);
    assert_hex(h, 32,
               "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53");
    cp_rlp_free(&r);

    uint8_t *raw = NULL, hash[32];
    size_t len = 0;
    assert_int_equal(cp_eth_sign_legacy(key, &tx, &raw, &len, hash), 0);
    assert_hex(raw, len,
               "f86c098504a817c800825208943535353535353535353535353535353535353535"
               "880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c"
               "71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc"
               "64214b297fb1966a3b6d83");
    cp_keccak256(raw, len, h);
    assert_memory_equal(h, hash, 32);
    free(raw);

    /* Deterministic: the same inputs sign to the same bytes again. */
    uint8_t *raw2 = NULL, hash2[32];
    assert_int_equal(cp_eth_sign_legacy(key, &tx, &raw2, &len, hash2), 0);
    assert_memory_equal(hash, hash2, 32);
    free(raw2);

    /* EIP-155: chain id 1337 gives v = recid + 2709, so 2709 or 2710,
     * which RLP writes as 0x82 0a 95/96. */
    tx.chain_id = 1337;
    assert_int_equal(cp_eth_sign_legacy(key, &tx, &raw2, &len, hash2), 0);
    assert_memory_not_equal(hash, hash2, 32);
    int found = 0;
    for (size_t i = 0; i + 3 < len; i++)
        if (raw2[i] == 0x82 && raw2[i + 1] == 0x0a &&
            (raw2[i + 2] == 0x95 || raw2[i + 2] == 0x96) && raw2[i + 3] == 0xa0)
            found = 1;
    assert_true(found);
    free(raw2);

    tx.chain_id = 0; /* EIP-155 needs a chain id */
    assert_int_equal(cp_eth_sign_legacy(key, &tx, &raw2, &len, hash2), -EINVAL);
    memset(key, 0, sizeof key); /* not a valid secp256k1 key */
    tx.chain_id = 1;
    assert_int_equal(cp_eth_sign_legacy(key, &tx, &raw2, &len, hash2), -EINVAL);
}

static void test_addresses(void **state)
{
    (void)state;
    uint8_t key[32], addr[20], back[20];
    char s[43];

    unhex("4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
          key, 32);
    assert_int_equal(tally_eth_key_address(key, addr), 0);
    tally_eth_address_format(addr, s);
    assert_string_equal(s, "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1");

    unhex("6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1",
          key, 32);
    assert_int_equal(tally_eth_key_address(key, addr), 0);
    tally_eth_address_format(addr, s);
    assert_string_equal(s, "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0");

    /* The EIP's example key. */
    memset(key, 0x46, sizeof key);
    assert_int_equal(tally_eth_key_address(key, addr), 0);
    tally_eth_address_format(addr, s);
    assert_string_equal(s, "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F");

    /* Parsing: lower case, upper case and a correct checksum are accepted;
     * a checksum with one letter's case flipped is not. */
    assert_int_equal(tally_eth_address_parse(
                         "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1", back), 0);
    assert_memory_equal(back, "\x90\xf8\xbf", 3);
    assert_int_equal(tally_eth_address_parse(
                         "90F8BF6A479F320EAD074411A4B0E7944EA8C9C1", back), 0);
    assert_int_equal(tally_eth_address_parse(
                         "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", back), 0);
    assert_int_equal(tally_eth_address_parse(
                         "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9c1", back),
                     -EINVAL);
    assert_int_equal(tally_eth_address_parse("0x90f8", back), -EINVAL);
    assert_int_equal(tally_eth_address_parse(
                         "0x90f8bf6a479f320ead074411a4b0e7944ea8c9cg", back),
                     -EINVAL);
}

static void test_revert_decoding(void **state)
{
    (void)state;
    char msg[256];
    uint8_t d[4 + 64 + 32];
    memset(d, 0, sizeof d);
    memcpy(d, "\x52\x7e\x3c\x58", 4);
    d[4 + 31] = 9;  /* last */
    d[36 + 31] = 7; /* given */
    assert_int_equal(cp_anchor_decode_revert(d, 68, msg, sizeof msg),
                     TALLY_EROLLBACK);
    assert_string_equal(msg, "seq 7 is not greater than 9");

    /* Error(string) "no" */
    memset(d, 0, sizeof d);
    memcpy(d, "\x08\xc3\x79\xa0", 4);
    d[4 + 31] = 32;
    d[36 + 31] = 2;
    d[68] = 'n';
    d[69] = 'o';
    assert_int_equal(cp_anchor_decode_revert(d, 100, msg, sizeof msg),
                     TALLY_EREVERTED);
    assert_string_equal(msg, "reverted: no");

    /* Panic(0x11): arithmetic overflow */
    memset(d, 0, sizeof d);
    memcpy(d, "\x4e\x48\x7b\x71", 4);
    d[4 + 31] = 0x11;
    assert_int_equal(cp_anchor_decode_revert(d, 36, msg, sizeof msg),
                     TALLY_EREVERTED);
    assert_string_equal(msg, "panic 0x11");

    assert_int_equal(cp_anchor_decode_revert(d, 0, msg, sizeof msg),
                     TALLY_EREVERTED);
    assert_string_equal(msg, "reverted without a reason");
    assert_int_equal(cp_anchor_decode_revert((const uint8_t *)"\xde\xad", 2,
                                             msg, sizeof msg),
                     TALLY_EREVERTED);
    assert_string_equal(msg, "reverted with data 0xdead");
}

static void test_hex(void **state)
{
    (void)state;
    uint64_t v = 99;
    assert_int_equal(cp_hex_quantity("0x0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cp_hex_quantity("0x539", &v), 0);
    assert_int_equal(v, 1337);
    assert_int_equal(cp_hex_quantity("0xffffffffffffffff", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(cp_hex_quantity("0x10000000000000000", &v), -ERANGE);
    assert_int_equal(cp_hex_quantity("0x", &v), -EPROTO);
    assert_int_equal(cp_hex_quantity("12", &v), -EPROTO);
    assert_int_equal(cp_hex_quantity("0x1g", &v), -EPROTO);

    uint8_t b[4] = {1, 2, 3, 4};
    assert_int_equal(cp_hex_data("0xdeadBEEF", b, 4), 0);
    assert_memory_equal(b, "\xde\xad\xbe\xef", 4);
    assert_int_equal(cp_hex_data("0xdeadbe", b, 4), -EPROTO);
    assert_int_equal(cp_hex_data("0xdeadbeeg", b, 4), -EPROTO);
    assert_memory_equal(b, "\xde\xad\xbe\xef", 4); /* untouched on failure */

    uint8_t *d = (uint8_t *)1;
    size_t n = 7;
    assert_int_equal(cp_hex_data_alloc("0x", &d, &n), 0);
    assert_null(d);
    assert_int_equal(n, 0);
    assert_int_equal(cp_hex_data_alloc("0xabc", &d, &n), -EPROTO);
    assert_int_equal(cp_hex_data_alloc("0x00ff", &d, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(d[1], 0xff);
    free(d);
}

static void write_file(const char *path, const void *data, size_t len,
                       mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void test_key_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/tally-ckey.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/signer.key", dir);
    uint8_t key[32], addr[20];
    char s[43];

    const char *hex = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d\n";
    write_file(path, hex, strlen(hex), 0600);
    assert_int_equal(tally_eth_key_load(path, key), 0);
    assert_int_equal(tally_eth_key_address(key, addr), 0);
    tally_eth_address_format(addr, s);
    assert_string_equal(s, "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1");

    write_file(path, hex + 2, 64, 0600); /* no 0x, no newline */
    assert_int_equal(tally_eth_key_load(path, key), 0);

    uint8_t raw[32];
    memcpy(raw, key, 32);
    write_file(path, raw, 32, 0400); /* 32 raw bytes */
    assert_int_equal(tally_eth_key_load(path, key), 0);
    assert_memory_equal(key, raw, 32);

    write_file(path, hex, strlen(hex), 0640); /* group-readable: refused */
    assert_int_equal(tally_eth_key_load(path, key), TALLY_EKEYPERM);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(key[i], 0); /* wiped on failure */

    write_file(path, "0x1234\n", 7, 0600);
    assert_int_equal(tally_eth_key_load(path, key), TALLY_EKEY);
    char zeros[65];
    memset(zeros, '0', 64);
    zeros[64] = '\n';
    write_file(path, zeros, 65, 0600); /* key 0 is not a key */
    assert_int_equal(tally_eth_key_load(path, key), TALLY_EKEY);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(tally_eth_key_load(path, key), -ENOENT);
    assert_int_equal(rmdir(dir), 0);
}

static void test_bytecode_embedded(void **state)
{
    (void)state;
    /* The generated source carries the committed .bin files: creation code
     * of 590 bytes that ends with (and so contains) the 561-byte runtime. */
    assert_int_equal(cp_anchor_creation_len, 590);
    assert_int_equal(cp_anchor_runtime_len, 561);
    assert_memory_equal(cp_anchor_creation + cp_anchor_creation_len -
                            cp_anchor_runtime_len,
                        cp_anchor_runtime, cp_anchor_runtime_len);
}

static void test_options(void **state)
{
    (void)state;
    tally_eth *e = NULL;
    const char *urls[3] = {"http://127.0.0.1:1", "http://127.0.0.1:2",
                           "http://127.0.0.1:3"};
    tally_eth_options o = {.rpc_urls = urls, .rpc_count = 3};
    assert_int_equal(tally_eth_open(&e, &o), 0);
    uint8_t a[20];
    assert_int_equal(tally_eth_sender(e, a), -ENOKEY);
    tally_eth_close(e);
    o.quorum = 1; /* not a majority of 3 */
    assert_int_equal(tally_eth_open(&e, &o), -EINVAL);
    o.quorum = 2;
    assert_int_equal(tally_eth_open(&e, &o), 0);
    tally_eth_close(e);
    o.quorum = 4;
    assert_int_equal(tally_eth_open(&e, &o), -EINVAL);
    o.quorum = 0;
    const char *bad[1] = {"ftp://127.0.0.1/"};
    o.rpc_urls = bad;
    o.rpc_count = 1;
    assert_int_equal(tally_eth_open(&e, &o), -EINVAL);
    uint8_t key[32];
    memset(key, 0x46, sizeof key);
    o.rpc_urls = urls;
    o.from = a;
    o.signer_key = key; /* both: which one? refused */
    assert_int_equal(tally_eth_open(&e, &o), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keccak),
        cmocka_unit_test(test_abi_selectors),
        cmocka_unit_test(test_rlp),
        cmocka_unit_test(test_eip155_example),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_revert_decoding),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_bytecode_embedded),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
