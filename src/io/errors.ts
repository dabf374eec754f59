/** Codes src/io/atomic.ts and src/io/extract.ts raise (confine.ts has ConfinementErrorCode). */
export type IoErrorCode = 'OUTPUT_DIR_NOT_FOUND' | 'DEST_NOT_EMPTY';
