package prompt

// defaults are shoal's own wording of OpenEvolve's templates: the same names, sections and
// placeholders, so that a template_dir written for OpenEvolve overrides them one for one.
var defaults = map[string]string{
	SystemMessage: "You are an expert software developer tasked with iteratively improving a codebase. " +
		"Your job is to analyze the current program and suggest improvements based on feedback from previous attempts. " +
		"Focus on making targeted changes that will increase the program's performance metrics.",

	DiffUser: userHeader + "# Task\n" +
		"Suggest improvements to the program that will raise its fitness. Change only code between EVOLVE-BLOCK-START and EVOLVE-BLOCK-END.\n" +
		"Describe each change as a SEARCH/REPLACE block; the SEARCH part must match the current program exactly:\n\n" +
		"<<<<<<< SEARCH\n# original code to find and replace\n=======\n# new replacement code\n>>>>>>> REPLACE\n\n" +
		"You may give several blocks. Do not repeat the whole program.\n",

	FullRewriteUser: userHeader + "# Task\n" +
		"Rewrite the program to improve its fitness. Keep the EVOLVE-BLOCK-START / EVOLVE-BLOCK-END markers and change only the code between them; " +
		"keep the program's inputs and outputs as they are.\n" +
		"Provide the complete new program in one fenced code block:\n\n```{language}\n# your rewritten program here\n```\n",

	EvolutionHistory: "## Previous Attempts\n\n{previous_attempts}\n\n## Top Performing Programs\n\n{top_programs}\n\n{inspirations_section}",

	PreviousAttempt: "### Attempt {attempt_number}\n- Changes: {changes}\n- Performance: {performance}\n- Outcome: {outcome}\n",

	TopProgram: "### Program {program_number} (Score: {score})\n```{language}\n{program_snippet}\n```\nKey features: {key_features}\n",

	InspirationsSection: "## Inspiration Programs\n\nThese programs take other approaches; borrow what helps:\n\n{inspiration_programs}\n",

	InspirationProgram: "### Inspiration {program_number} (Score: {score}, Type: {program_type})\n```{language}\n{program_snippet}\n```\nUnique approach: {unique_features}\n",
}

const userHeader = "# Current Program Information\n" +
	"- Fitness: {fitness_score}\n" +
	"- Feature coordinates: {feature_coords} (dimensions: {feature_dimensions})\n" +
	"- Metrics:\n{metrics}\n" +
	"- Areas to work on:\n{improvement_areas}\n\n" +
	"{artifacts}\n\n" +
	"# Program Evolution History\n{evolution_history}\n\n" +
	"# Current Program\n```{language}\n{current_program}\n```\n\n"
