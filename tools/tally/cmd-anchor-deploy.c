/*
 * cmd-anchor-deploy.c — `tally anchor-deploy`: deploys the JournalAnchor
 * contract (bytecode built into libtally-checkpoint, FORMAT.md section 9.1)
 * and prints its address, which the other commands then take as --contract
 * or TALLY_CONTRACT.
 */
#include "anchor-opts.h"

#include <getopt.h>
#include <string.h>

const char cmd_anchor_deploy_usage[] =
    "Usage: tally anchor-deploy --rpc URL (--from ADDR | --signer-key-file F)\n"
    "                           [--chain-id N] [--confirmations N] [--json]\n"
    "\n"
    "Deploys the JournalAnchor contract and prints its address on stdout, one\n"
    "line (0x + 40 hex digits with the EIP-55 checksum), so that\n"
    "  export TALLY_CONTRACT=$(tally anchor-deploy --rpc URL --from ADDR)\n"
    "works. The code at the new address is read back and compared with the\n"
    "bytecode built into tally before the address is printed. One contract\n"
    "serves any number of journals and writers: it keeps the latest anchor\n"
    "per (journal id, writer account).\n"
    "\n"
    "With --json, one object instead:\n"
    "  {\"contract\":ADDR,\"chain_id\":N,\"deployer\":ADDR,\"tx\":HEX,\n"
    "   \"block\":N,\"block_hash\":HEX,\"gas_used\":N}\n"
    "\n"
    "Options:\n"
    "  --rpc URL            JSON-RPC endpoint; default $TALLY_RPC_URL\n"
    "  --from ADDR          deploy from this account, which the node keeps\n"
    "                       unlocked (development nodes)\n"
    "  --signer-key-file F  or sign the deployment here with this secp256k1\n"
    "                       key (mode 0600); default $TALLY_SIGNER_KEY_FILE\n"
    "  --rpc-quorum K       as for the other commands (reads only)\n"
    "  --chain-id N         the chain id the endpoint must report\n"
    "  --confirmations N    blocks the deployment's block needs (default 1)\n"
    "  --json               print one JSON object\n"
    "  -h, --help           show this help and exit\n"
    "\n"
    "Environment:\n"
    ANCHOR_ENV_HELP;

enum { OPT_JSON = 256 };

int cmd_anchor_deploy(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct anchor_opts ao;
    struct anchor a;
    tally_eth_receipt r;
    uint8_t sender[TALLY_ADDRESS_BYTES];
    char addr[TALLY_ADDRESS_STRLEN], from[TALLY_ADDRESS_STRLEN];
    char tx[2 * TALLY_ETH_HASH_BYTES + 1], bh[2 * TALLY_ETH_HASH_BYTES + 1];
    uint64_t chain_id = 0;
    int c, rc, json = 0, status;

    anchor_opts_init(&ao);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            json = 1;
            break;
        case 'h':
            return cli_help(self);
        default:
            rc = anchor_opt(self, &ao, c, optarg);
            if (rc == ANCHOR_OPT_NONE)
                return cli_usage_error(self, NULL);
            if (rc != EXIT_OK)
                return rc;
        }
    }
    if (argc - optind != 0)
        return cli_usage_error(self, "unexpected argument '%s'", argv[optind]);
    status = anchor_opts_finish(self, &ao, ANCHOR_NEED_SENDER | ANCHOR_NO_FILE);
    if (status == EXIT_OK && !anchor_opts_configured(&ao))
        status = cli_usage_error(self, "an endpoint is needed: --rpc URL or "
                                 "TALLY_RPC_URL");
    if (status == EXIT_OK)
        status = anchor_open(self, &ao, 1, &a);
    if (status != EXIT_OK) {
        anchor_opts_free(&ao);
        return status;
    }

    memset(&r, 0, sizeof r);
    rc = tally_anchor_deploy(a.eth, &r);
    if (rc < 0) {
        status = cli_fail(self, "deploying the anchor contract", NULL, rc,
                          tally_eth_errmsg(a.eth));
        goto out;
    }
    anchor_warn_disagreement(self, &a, rc);
    (void)tally_eth_chain_id(a.eth, &chain_id);
    tally_eth_address_format(r.contract, addr);
    if (json) {
        (void)tally_eth_sender(a.eth, sender);
        tally_eth_address_format(sender, from);
        cli_hex(r.tx_hash, sizeof r.tx_hash, tx);
        cli_hex(r.block_hash, sizeof r.block_hash, bh);
        printf("{\"contract\":\"%s\",\"chain_id\":%llu,\"deployer\":\"%s\","
               "\"tx\":\"0x%s\",\"block\":%llu,\"block_hash\":\"0x%s\","
               "\"gas_used\":%llu}\n", addr, (unsigned long long)chain_id, from,
               tx, (unsigned long long)r.block_number, bh,
               (unsigned long long)r.gas_used);
    } else {
        printf("%s\n", addr);
    }
    status = cli_flush_stdout(self);
out:
    anchor_close(&a);
    anchor_opts_free(&ao);
    return status;
}
