'use strict';
// The sidecar's Node client: spawn it, connect, take inserts, send requests, get run events.

const errors = require('./errors');
const { spawnSidecar, generateToken, SidecarProcess } = require('./spawn');
const { SidecarClient, backoffDelay } = require('./client');
const { MemoryIdempotencyStore } = require('./idempotency');
const { superviseSidecar, SidecarSupervisor } = require('./supervise');
const protocol = require('./protocol.generated');

module.exports = {
  spawnSidecar,
  generateToken,
  SidecarProcess,
  superviseSidecar,
  SidecarSupervisor,
  SidecarClient,
  MemoryIdempotencyStore,
  backoffDelay,
  protocol,
  ...errors,
};
