// SPDX-License-Identifier: MIT
//
// JournalAnchor: the on-chain half of tally's freshness check. For each
// (journal id, writer address) it keeps the latest anchored journal head
// (seq, head link) and the block it was anchored in. seq must grow strictly,
// so nobody -- not even the writer -- can move the anchor back to an older
// copy of the journal; a journal directory restored from an old backup is
// then behind its anchor and tally refuses it (docs/FORMAT.md, checkpoint).
//
// seq 0 means "never anchored": latest() of an unknown pair returns zeros and
// the first anchor must use seq >= 1. Each writer has its own counter per
// journal, so a stranger cannot block or overwrite someone else's anchors.
//
// Compiled by tests/chain/compile.js (solc 0.8.24, evmVersion shanghai,
// optimizer 200 runs, no metadata hash); the creation bytecode is committed
// as JournalAnchor.bin so the C side never needs a compiler.
pragma solidity 0.8.24;

contract JournalAnchor {
    // Two uint64s share one storage slot: slot base = (blockNumber << 64) | seq,
    // slot base + 1 = head. Kept in this order so eth_getProof readers can
    // find them (docs/FORMAT.md, anchor contract).
    struct Checkpoint {
        uint64 seq;
        uint64 blockNumber;
        bytes32 head;
    }

    mapping(bytes32 => mapping(address => Checkpoint)) private cps;

    event Anchored(bytes32 indexed journal, address indexed writer, uint64 seq, bytes32 head);

    error NotMonotonic(uint64 last, uint64 given);

    function anchor(bytes32 journal, uint64 seq, bytes32 head) external {
        Checkpoint storage c = cps[journal][msg.sender];
        if (seq <= c.seq) revert NotMonotonic(c.seq, seq);
        c.seq = seq;
        c.blockNumber = uint64(block.number);
        c.head = head;
        emit Anchored(journal, msg.sender, seq, head);
    }

    function latest(bytes32 journal, address writer)
        external
        view
        returns (uint64 seq, bytes32 head, uint64 blockNumber)
    {
        Checkpoint storage c = cps[journal][writer];
        return (c.seq, c.head, c.blockNumber);
    }
}
