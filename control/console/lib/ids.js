// Random keys (idempotency keys): crypto.getRandomValues works in every context, unlike
// crypto.randomUUID (secure contexts only: https or localhost).
export function randomKey() {
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}
