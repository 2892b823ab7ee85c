"""Hospital formats: results as DICOM SEG, SR and parametric maps, FHIR R4 bundles, and the
DICOMweb client. Translates results; holds no use case (those are in ``backend.services``)."""
