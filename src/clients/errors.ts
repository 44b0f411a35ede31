/** A client registration that breaks a rule (shown to the CLI user as is). */
export class ClientValidationError extends Error {}
