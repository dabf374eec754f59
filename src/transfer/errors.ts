/** Codes src/transfer raises besides the recipe's (RecipeErrorCode, RecipeRequestErrorCode). */
export type TransferErrorCode =
  | 'REMOTE_URL'
  | 'REMOTE_TOKEN_MISSING'
  | 'REMOTE_TRANSPORT'
  | 'REMOTE_UNREACHABLE'
  | 'REMOTE_RESPONSE_TOO_LARGE'
  | 'REMOTE_NO_OUTPUT'
  | 'REMOTE_LOCALE_MISSING'
  | 'REMOTE_OUTPUT_MISMATCH'
  | 'REMOTE_OUTPUT_SIGNATURE'
  | 'BLOB_DIGEST_MISMATCH'
  | 'INPUT_CHANGED';
