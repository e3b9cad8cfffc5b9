// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title KeyLedger - a permissioned ledger of QKD session-key commitments
/// @notice Records commitments (hashes) to QKD session keys, never the keys. Roadside
///         units (key managers) record sessions and anchor Merkle batches; verifiers
///         record verification results; the authority registers vehicles, revokes keys
///         and pauses. Revoking a vehicle bumps its epoch, so every key recorded under an
///         older epoch turns invalid at once, in O(1) gas.
contract KeyLedger is AccessControl, Pausable, Multicall {
    bytes32 public constant KEY_MANAGER_ROLE = keccak256("KEY_MANAGER_ROLE");
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");

    uint32 public constant PPM = 1_000_000;
    uint8 public constant PROTOCOL_BB84 = 1;
    uint8 public constant PROTOCOL_E91 = 2;

    enum KeyStatus {
        Unknown,
        Valid,
        Revoked,
        Expired
    }

    struct Vehicle {
        bool registered;
        uint64 epoch;
        uint64 registeredAt;
    }

    /// @dev Packed into four storage slots.
    struct KeyRecord {
        bytes32 commitment;
        bytes32 vehicleId;
        address keyManager;
        uint32 qberPpm;
        uint32 finalKeyBits;
        uint8 protocol;
        bool revoked;
        uint64 createdAt;
        uint64 expiresAt;
        uint64 vehicleEpoch;
    }

    struct Verification {
        uint32 passed;
        uint32 failed;
        address lastVerifier;
        uint64 lastAt;
    }

    struct Batch {
        address keyManager;
        uint32 count;
        uint64 anchoredAt;
    }

    struct Stats {
        uint64 vehicles;
        uint64 sessions;
        uint64 verifications;
        uint64 keyRevocations;
        uint64 vehicleRevocations;
        uint64 batches;
        uint64 batchedRecords;
    }

    mapping(bytes32 vehicleId => Vehicle) private _vehicles;
    mapping(bytes32 keyId => KeyRecord) private _keys;
    mapping(bytes32 keyId => Verification) private _verifications;
    mapping(bytes32 root => Batch) private _batches;
    mapping(bytes32 keyId => bool) private _batchedKeyRevoked;
    Stats private _stats;

    // ---------------------------------------------------------------- errors
    error ZeroVehicleId();
    error VehicleAlreadyRegistered(bytes32 vehicleId);
    error VehicleNotRegistered(bytes32 vehicleId);
    error ZeroKeyId();
    error ZeroCommitment();
    error KeyAlreadyRecorded(bytes32 keyId);
    error KeyNotFound(bytes32 keyId);
    error KeyAlreadyRevoked(bytes32 keyId);
    error QberOutOfRange(uint32 qberPpm);
    error ZeroKeyBits();
    error UnknownProtocol(uint8 protocol);
    error ZeroCreatedAt();
    error ExpiryNotAfterCreation(uint64 createdAt, uint64 expiresAt);
    error ExpiryInPast(uint64 expiresAt, uint256 blockTimestamp);
    error EmptyReason();
    error ZeroMerkleRoot();
    error ZeroBatchCount();
    error BatchAlreadyAnchored(bytes32 root);
    error NotABatchedKey(bytes32 keyId);

    // ---------------------------------------------------------------- events
    event VehicleRegistered(bytes32 indexed vehicleId, address indexed authority, uint64 epoch);
    event VehicleDeregistered(bytes32 indexed vehicleId, address indexed authority, uint64 newEpoch);
    event SessionRecorded(
        bytes32 indexed keyId,
        bytes32 indexed vehicleId,
        address indexed keyManager,
        bytes32 commitment,
        uint32 qberPpm,
        uint32 finalKeyBits,
        uint8 protocol,
        uint64 createdAt,
        uint64 expiresAt
    );
    event KeyVerified(bytes32 indexed keyId, address indexed verifier, bool ok, uint16 reasonCode);
    event KeyRevoked(bytes32 indexed keyId, address indexed authority, string reason);
    event VehicleKeysRevoked(bytes32 indexed vehicleId, address indexed authority, uint64 newEpoch, string reason);
    event BatchAnchored(bytes32 indexed root, address indexed keyManager, uint32 count);

    /// @param authority receives the admin role; on a dev chain it also gets the others.
    constructor(address authority, bool grantAllRoles) {
        _grantRole(DEFAULT_ADMIN_ROLE, authority);
        if (grantAllRoles) {
            _grantRole(KEY_MANAGER_ROLE, authority);
            _grantRole(VERIFIER_ROLE, authority);
        }
    }

    // ---------------------------------------------------------------- admin
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ---------------------------------------------------------------- vehicles
    function registerVehicle(bytes32 vehicleId) external onlyRole(DEFAULT_ADMIN_ROLE) whenNotPaused {
        if (vehicleId == bytes32(0)) revert ZeroVehicleId();
        Vehicle storage v = _vehicles[vehicleId];
        if (v.registered) revert VehicleAlreadyRegistered(vehicleId);
        v.registered = true;
        v.registeredAt = uint64(block.timestamp);
        _stats.vehicles += 1;
        emit VehicleRegistered(vehicleId, _msgSender(), v.epoch);
    }

    /// @notice Deregistering also invalidates every key of the vehicle (its epoch moves on).
    function deregisterVehicle(bytes32 vehicleId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Vehicle storage v = _requireVehicle(vehicleId);
        v.registered = false;
        v.epoch += 1;
        _stats.vehicles -= 1;
        emit VehicleDeregistered(vehicleId, _msgSender(), v.epoch);
    }

    function vehicle(bytes32 vehicleId) external view returns (Vehicle memory) {
        return _vehicles[vehicleId];
    }

    // ---------------------------------------------------------------- sessions
    /// @notice Record one QKD session key by its commitment. The caller is the key manager.
    function recordSession(
        bytes32 keyId,
        bytes32 commitment,
        bytes32 vehicleId,
        uint32 qberPpm,
        uint32 finalKeyBits,
        uint8 protocol,
        uint64 createdAt,
        uint64 expiresAt
    ) external onlyRole(KEY_MANAGER_ROLE) whenNotPaused {
        if (keyId == bytes32(0)) revert ZeroKeyId();
        if (commitment == bytes32(0)) revert ZeroCommitment();
        if (_keys[keyId].commitment != bytes32(0)) revert KeyAlreadyRecorded(keyId);
        Vehicle storage v = _requireVehicle(vehicleId);
        _checkSessionFields(qberPpm, finalKeyBits, protocol, createdAt, expiresAt);

        _keys[keyId] = KeyRecord({
            commitment: commitment,
            vehicleId: vehicleId,
            keyManager: _msgSender(),
            qberPpm: qberPpm,
            finalKeyBits: finalKeyBits,
            protocol: protocol,
            revoked: false,
            createdAt: createdAt,
            expiresAt: expiresAt,
            vehicleEpoch: v.epoch
        });
        _stats.sessions += 1;
        emit SessionRecorded(
            keyId, vehicleId, _msgSender(), commitment, qberPpm, finalKeyBits, protocol, createdAt, expiresAt
        );
    }

    /// @notice Status and stored record of a key; the record is zero for an unknown key.
    function keyStatus(bytes32 keyId) public view returns (KeyStatus status, KeyRecord memory record) {
        record = _keys[keyId];
        if (record.commitment == bytes32(0)) return (KeyStatus.Unknown, record);
        if (record.revoked || record.vehicleEpoch != _vehicles[record.vehicleId].epoch) {
            return (KeyStatus.Revoked, record);
        }
        if (block.timestamp >= record.expiresAt) return (KeyStatus.Expired, record);
        return (KeyStatus.Valid, record);
    }

    /// @notice Status of a key and whether `commitment` equals the recorded one.
    function checkKey(bytes32 keyId, bytes32 commitment) external view returns (KeyStatus status, bool matches) {
        KeyRecord memory record;
        (status, record) = keyStatus(keyId);
        matches = status != KeyStatus.Unknown && record.commitment == commitment;
    }

    // ---------------------------------------------------------------- verification
    function recordVerification(bytes32 keyId, bool ok, uint16 reasonCode)
        external
        onlyRole(VERIFIER_ROLE)
        whenNotPaused
    {
        if (_keys[keyId].commitment == bytes32(0)) revert KeyNotFound(keyId);
        Verification storage ver = _verifications[keyId];
        if (ok) ver.passed += 1;
        else ver.failed += 1;
        ver.lastVerifier = _msgSender();
        ver.lastAt = uint64(block.timestamp);
        _stats.verifications += 1;
        emit KeyVerified(keyId, _msgSender(), ok, reasonCode);
    }

    function verifications(bytes32 keyId) external view returns (Verification memory) {
        return _verifications[keyId];
    }

    // ---------------------------------------------------------------- revocation
    /// @notice Revocations stay open while paused: stopping a compromised key is the emergency.
    function revokeKey(bytes32 keyId, string calldata reason) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bytes(reason).length == 0) revert EmptyReason();
        KeyRecord storage record = _keys[keyId];
        if (record.commitment == bytes32(0)) revert KeyNotFound(keyId);
        if (record.revoked) revert KeyAlreadyRevoked(keyId);
        record.revoked = true;
        _stats.keyRevocations += 1;
        emit KeyRevoked(keyId, _msgSender(), reason);
    }

    /// @notice Invalidate every key of a vehicle, past and present, in O(1) gas.
    function revokeVehicleKeys(bytes32 vehicleId, string calldata reason) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bytes(reason).length == 0) revert EmptyReason();
        Vehicle storage v = _requireVehicle(vehicleId);
        v.epoch += 1;
        _stats.vehicleRevocations += 1;
        emit VehicleKeysRevoked(vehicleId, _msgSender(), v.epoch, reason);
    }

    // ---------------------------------------------------------------- Merkle batches
    /// @notice Anchor the root of a Merkle tree over `count` key leaves (see `keyLeaf`).
    function anchorBatch(bytes32 root, uint32 count) external onlyRole(KEY_MANAGER_ROLE) whenNotPaused {
        if (root == bytes32(0)) revert ZeroMerkleRoot();
        if (count == 0) revert ZeroBatchCount();
        if (_batches[root].anchoredAt != 0) revert BatchAlreadyAnchored(root);
        _batches[root] = Batch({keyManager: _msgSender(), count: count, anchoredAt: uint64(block.timestamp)});
        _stats.batches += 1;
        _stats.batchedRecords += count;
        emit BatchAnchored(root, _msgSender(), count);
    }

    function batch(bytes32 root) external view returns (Batch memory) {
        return _batches[root];
    }

    /// @notice OpenZeppelin StandardMerkleTree leaf: keccak256(keccak256(abi.encode(fields))).
    function keyLeaf(
        bytes32 keyId,
        bytes32 commitment,
        bytes32 vehicleId,
        uint32 qberPpm,
        uint32 finalKeyBits,
        uint8 protocol,
        uint64 createdAt,
        uint64 expiresAt
    ) public pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(keyId, commitment, vehicleId, qberPpm, finalKeyBits, protocol, createdAt, expiresAt)
                )
            )
        );
    }

    /// @notice True when `leaf` is in the anchored tree `root` (sorted-pair proof).
    function verifyInclusion(bytes32 root, bytes32[] calldata proof, bytes32 leaf) external view returns (bool) {
        if (_batches[root].anchoredAt == 0) return false;
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @notice Revoke one Merkle-batched key. Only its batch's root is stored here, so the
    /// revocation is kept by key id and announced with the same `KeyRevoked` event as
    /// `revokeKey`; receivers holding the key's proof check `batchedKeyRevoked` (or their
    /// ledger view, which applies the event).
    function revokeBatchedKey(bytes32 keyId, string calldata reason) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (keyId == bytes32(0)) revert ZeroKeyId();
        if (bytes(reason).length == 0) revert EmptyReason();
        if (_keys[keyId].commitment != bytes32(0)) revert NotABatchedKey(keyId);
        if (_batchedKeyRevoked[keyId]) revert KeyAlreadyRevoked(keyId);
        _batchedKeyRevoked[keyId] = true;
        _stats.keyRevocations += 1;
        emit KeyRevoked(keyId, _msgSender(), reason);
    }

    function batchedKeyRevoked(bytes32 keyId) external view returns (bool) {
        return _batchedKeyRevoked[keyId];
    }

    // ---------------------------------------------------------------- stats
    function stats() external view returns (Stats memory) {
        return _stats;
    }

    // ---------------------------------------------------------------- internals
    function _requireVehicle(bytes32 vehicleId) private view returns (Vehicle storage v) {
        if (vehicleId == bytes32(0)) revert ZeroVehicleId();
        v = _vehicles[vehicleId];
        if (!v.registered) revert VehicleNotRegistered(vehicleId);
    }

    function _checkSessionFields(
        uint32 qberPpm,
        uint32 finalKeyBits,
        uint8 protocol,
        uint64 createdAt,
        uint64 expiresAt
    ) private view {
        if (qberPpm > PPM) revert QberOutOfRange(qberPpm);
        if (finalKeyBits == 0) revert ZeroKeyBits();
        if (protocol != PROTOCOL_BB84 && protocol != PROTOCOL_E91) revert UnknownProtocol(protocol);
        if (createdAt == 0) revert ZeroCreatedAt();
        if (expiresAt <= createdAt) revert ExpiryNotAfterCreation(createdAt, expiresAt);
        if (expiresAt <= block.timestamp) revert ExpiryInPast(expiresAt, block.timestamp);
    }
}
