/** A value that breaks the contract: `field` names the culprit, `reason` says why. */
export class InvalidEventError extends Error {
  constructor(readonly field: string, readonly reason: string) {
    super(`${field}: ${reason}`);
    this.name = "InvalidEventError";
  }
}
