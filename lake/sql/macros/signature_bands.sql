-- signature_bands(signatures): the LSH band keys of each row of a relation with (conversation_id,
-- signature): the bins are cut into bands of `dedup_band_rows` bins, and a non-empty band's key hashes the
-- band's number and its hashes (their XOR and number), so two signatures with the same hashes in every bin
-- of a band share a key, and keys of different bands differ. A list in band order; NULL for no signature.
-- Computed with the partials (cached per data file) and for merged signatures in conversation_features, so
-- dedup joins on one integer key instead of grouping every hash of every signature.
CREATE OR REPLACE MACRO signature_bands(signatures) AS TABLE
SELECT conversation_id, list_in_order(key, band) AS bands
FROM (
    SELECT conversation_id, (x >> getvariable('dedup_bin_shift'))::INTEGER // getvariable('dedup_band_rows') AS band,
           hash(band, bit_xor(x), count(*)) AS key
    FROM (SELECT conversation_id, unnest(signature) AS x FROM query_table(signatures))
    GROUP BY conversation_id, band
)
GROUP BY conversation_id;
